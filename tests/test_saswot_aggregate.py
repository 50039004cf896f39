"""Rank aggregates of proxies as SasWOT's score: records keep the components, the loop re-ranks every
network scored so far after each batch, the strategies select by those ranks, finalists are
rescored by their components, and the search job takes an aggregate name."""

import json
import math

import numpy as np
import pytest

from segnas.errors import SegnasError
from segnas.evaluate.groundtruth import sample_archs
from segnas.evaluate.proxy import ProxyEvaluator
from segnas.proxies.aggregate import aggregate_ranks
from segnas.search.strategies.nsga2 import pareto_front
from segnas.search.strategies.saswot import training_free_search
from segnas.spaces import arch_key
from test_saswot import SMALL, Params, random_batches, saswot_job

CHEAP = "rank_log(params,flops)"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))  # inherited by spawned workers


def evaluator(proxy=CHEAP, **kw) -> ProxyEvaluator:
    return ProxyEvaluator(SMALL, proxy, batches=random_batches(), num_classes=5, **kw)


def test_an_aggregate_record_keeps_its_components_and_ranks_among_others():
    archs = [a.to_dict() for a in sample_archs(SMALL, 6, seed=2)]
    ev = evaluator()
    records = [ev(a) for a in archs]
    assert all(r["score"] is None and set(r["components"]) == {"params", "flops"} for r in records)
    plain = {name: [ProxyEvaluator(SMALL, name, batches=random_batches(), num_classes=5)(a)["score"] for a in archs]
             for name in ("params", "flops")}
    assert [r["components"]["params"] for r in records] == pytest.approx(plain["params"])
    assert ev.population_scores(records) == pytest.approx(aggregate_ranks(plain, "log"))
    assert evaluator("params").population_scores(records) is None  # a per-network proxy's scores stand
    with pytest.raises(SegnasError, match="rank aggregate scores a population"):
        ev.score_arch(SMALL.arch_from_dict(archs[0]))
    with pytest.raises(SegnasError, match="unknown proxy 'nope'"):
        evaluator("rank_mean(params,nope)")


def search(proxy, **kw):
    params = Params()
    return training_free_search(SMALL, proxy, lambda a: params(a) / 1000, 1e9, candidates=30, population=8,
                                sample_size=3, seed=5, batches=random_batches(), num_classes=5, **kw)


def records(run_dir) -> list[dict]:
    lines = (run_dir / "candidates.jsonl").read_text().splitlines()
    return [json.loads(line)["result"] for line in lines if line.strip()]


def test_the_loop_reranks_every_network_so_far_and_the_winner_is_the_best_aggregate(tmp_path):
    result = search(CHEAP, workers=2, executor="inline", run_dir=tmp_path)
    everyone = records(tmp_path)
    assert len(everyone) == 30 and all(r["score"] is None for r in everyone)
    final = dict(zip((arch_key(r["arch"]) for r in everyone), evaluator().population_scores(everyone)))
    # after the last batch every candidate's score is its aggregate among all 30
    assert [t.score for t in result.top] == pytest.approx([final[arch_key(t.arch)] for t in result.top])
    assert result.best.score == pytest.approx(max(final.values()))
    # the history keeps each candidate's score as of its batch: the first batch ranks its 2 networks
    first = sorted(h["score"] for h in result.history[:2])
    assert first[1] == 0.0 and first[0] in (2 * math.log(0.5), math.log(0.5), 0.0)


def test_an_aggregate_of_one_proxy_searches_exactly_like_the_proxy():
    """rank_mean(params) orders any population as params does, so the evolution proposes the same
    networks and picks the same winner: the re-ranking reaches the selection."""
    by_proxy, by_rank = search("params"), search("rank_mean(params)")
    assert [arch_key(c.arch) for c in by_proxy.top] == [arch_key(c.arch) for c in by_rank.top]
    assert [h["latency_ms"] for h in by_proxy.history] == [h["latency_ms"] for h in by_rank.history]
    assert by_rank.best.score == 1.0  # the best of 30 ranks 30/30


def test_nsga2_keeps_the_front_of_the_reranked_population():
    result = search(CHEAP, mode="nsga2", nsga2={"winner": "score"})
    front = result.nsga2["front"]
    assert front and all(math.isfinite(m["score"]) for m in front)
    # no front member is dominated by another one on the final scores
    points = [(m["score"], m["latency_ms"]) for m in front]
    for s, t in points:
        assert not any(s2 >= s and t2 >= t and (s2, t2) != (s, t) for s2, t2 in points)
    assert len(pareto_front(result.top)) >= 1


def test_finalists_are_rescored_by_components_over_more_initializations():
    result = search("rank_mean(nwot,params)", final_inits=2, top_k=4)
    finals = [c.final_score for c in result.top]
    assert result.final_inits == 2 and all(f is not None and 0 < f <= 1 for f in finals)
    assert finals == sorted(finals, reverse=True) and result.best is result.top[0]
    assert max(finals) == 1.0 or len(set(finals)) < len(finals)  # ranks among the 4 finalists


def test_the_search_job_takes_an_aggregate_name(tmp_path, cache):
    scoring = {"proxy": CHEAP, "images": 4, "batch_size": 2, "size": [32, 48]}
    run, _ = saswot_job(tmp_path / "out", scoring=scoring, candidates=6, population=3, sample_size=2)
    result = json.loads((run / "search_result.json").read_text())
    top = result["details"]["top"]
    assert result["details"]["scoring"]["proxy"] == CHEAP
    assert np.isfinite(top[0]["score"]) and top[0]["score"] == max(t["score"] for t in top)
    assert len(records(run)) == 6 and all("components" in r for r in records(run))
