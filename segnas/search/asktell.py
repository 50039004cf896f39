"""Sample-based (ask/tell) strategies and the one loop that drives them.

A strategy proposes one architecture at a time (``ask``) and learns from evaluated ones
(``tell``). The loop owns everything else, the same for every method: a proposal slower than the
latency target is rejected before it is evaluated (a table lookup), a duplicate is discarded, up to
``workers`` proposals are evaluated together on a ``WorkerPool``, every evaluation is appended to
``candidates.jsonl`` as it finishes, and the loop state is checkpointed after every batch, so a killed search resumes
with the same proposals and reuses every finished evaluation. It stops after ``candidates``
evaluations, after ``time_limit_s``, or when ``max_draws`` proposals found nothing new.

A proposal the loop does not evaluate (a duplicate of an earlier or same-batch one, one over
the latency target, or one whose network cannot segment: ``SearchSpace.defect``) is handed to the strategy's ``tell_skipped`` (default: ignored), so a learning
strategy (the RL controller) gets a signal for every sample it drew. Whatever the hook changes
must be in the strategy's ``state_dict``: the loop checkpoints it with the next batch.

Where the evaluator's score is a rank within the population (``Evaluator.population_scores``: a
rank aggregate of proxies), the loop re-ranks every candidate scored so far after each batch and
tells the strategy through ``rescored``; the history records each candidate's score as of its batch.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import traceback
import warnings
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch

from segnas.config.search import EvaluatorSettings, SearchSettings
from segnas.progress import Echo, progress_bar
from segnas.errors import CannotWrite, SegnasError, SegnasWarning
from segnas.evaluate.base import Evaluator, fitness
from segnas.parallel import TaskResources, WorkerPool, default_key
from segnas.parallel.executors import WorkerError
from segnas.parallel.store import ResultStore
from segnas.report.format import num
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, Strategy
from segnas.search.target import refuse_unreachable_target
from segnas.spaces.base import Architecture, SearchSpace, get_space
from segnas.utils import atomic_write_text, json_float


@dataclass
class Candidate:
    """One evaluated architecture; ``index`` is its position (1-based) in evaluation order;
    ``final_score`` its score again by a finer evaluation, for the finalists of some strategies."""

    arch: Any
    key: str
    score: float | None
    latency_ms: float
    index: int
    record: dict[str, Any] = field(default_factory=dict)
    final_score: float | None = None

    @property
    def fitness(self) -> float:
        return fitness(self.score)

    def to_dict(self) -> dict[str, Any]:
        out = {"arch": self.arch.to_dict(), "score": json_float(self.score), "latency_ms": self.latency_ms,
               "index": self.index}
        if self.final_score is not None:
            out["final_score"] = json_float(self.final_score)
        return out


@dataclass
class Skipped:
    """A proposal the loop did not evaluate. ``reason`` "duplicate": ``earlier`` is the evaluated
    candidate with the same key (None when the earlier one is in the batch being evaluated: it
    reaches ``tell`` right after); "infeasible": predicted at ``latency_ms``, over the target;
    "degenerate": the space's ``defect`` says its network cannot segment."""

    arch: Any
    key: str
    reason: Literal["duplicate", "infeasible", "degenerate"]
    latency_ms: float | None = None
    earlier: Candidate | None = None


def json_difference(value: Any, back: Any, where: str = "state") -> str | None:
    """Where ``back`` (``value`` through JSON) first differs from ``value``; None when nowhere."""
    if isinstance(value, dict):
        if not isinstance(back, dict) or list(value) != list(back):
            bad = next((k for k in value if not isinstance(k, str)), None)
            return f"{where}, key {bad!r} (not a str)" if bad is not None else where
        return next((d for k in value if (d := json_difference(value[k], back[k], f"{where}[{k!r}]"))), None)
    if isinstance(value, list):
        return next((d for i, (v, b) in enumerate(zip(value, back))
                     if (d := json_difference(v, b, f"{where}[{i}]"))), None)
    if isinstance(value, float) and isinstance(back, float) and math.isnan(value) and math.isnan(back):
        return None
    same = type(value) is type(back) or (isinstance(value, float) and isinstance(back, float))  # (numpy's float64)
    return None if same and value == back else f"{where} ({type(value).__name__})"


def check_record(record: Any, evaluator: Any) -> None:
    """A SegnasError naming the evaluator when what it returned is not a record the loop keeps: a
    dict whose ``score`` is a number or None (checked before it is stored, so a resume never reads it)."""
    score = record.get("score", ...) if isinstance(record, dict) else ...
    if score is ... or not (score is None or (isinstance(score, numbers.Real) and not isinstance(score, bool))):
        raise SegnasError(f"{type(evaluator).__qualname__} returned {str(record)[:120]}: an evaluation is a dict "
                          "with 'score', a number (higher is better) or None")


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


class AskTellStrategy(Strategy):
    """A sample-based method: ``begin`` (space, seed), then ``ask`` / ``tell`` until the loop ends,
    then ``choose`` the winner among what was evaluated."""

    family: ClassVar[str] = "ask-tell"
    section_fields: ClassVar[tuple[str, ...]] = ("space", "space_options", "candidates", "top_k")

    @classmethod
    def unused_settings(cls, settings: SearchSettings) -> dict[str, str]:
        unused = {"sync_bn": "only one-shot searches synchronize BatchNorm (under torchrun)",
                  "bf16": "no supernet trains here, and the final training computes as its recipe says "
                          "(final.overrides.bf16)"}
        if not cls.uses_search_size(settings):
            unused["search_size"] = ("this search scores no candidate on resized whole images (a proxy scores at its "
                                     "own size, a short training on the data section's crops, the weight-sharing "
                                     "evaluator at its size when set)")
        return unused

    @classmethod
    def uses_search_size(cls, settings: SearchSettings) -> bool:
        """Whether candidates are scored on whole images resized to ``search_size``: by the
        weight-sharing evaluator (the section's ``evaluator``) without a size of its own."""
        ev = getattr(getattr(settings, settings.method, None), "evaluator", None)
        return isinstance(ev, EvaluatorSettings) and ev.kind == "supernet" and ev.supernet.size is None

    def begin(self, space: SearchSpace, seed: int, settings: Any) -> None:
        """Start a search of ``space`` with ``seed`` and the strategy's settings section."""
        self.space = space
        self.settings = settings
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def ask(self) -> Architecture:
        """One proposal (SegnasError: nothing valid this time, draw again)."""

    def tell(self, candidates: list[Candidate]) -> None:
        """Evaluated proposals, in evaluation order (default: nothing to learn)."""

    def tell_skipped(self, skipped: Skipped) -> None:
        """A proposal the loop discarded (duplicate) or rejected (over the target, degenerate), as it happens,
        before the batch it was drawn for is evaluated (default: nothing to learn)."""

    def rescored(self, scored: Sequence[Candidate]) -> None:
        """The scores of ``scored`` (every candidate so far, their ``score`` updated in place) changed:
        they are ranks within the population (a rank aggregate). Strategies that keep scores of their
        own update them here (default: nothing kept)."""

    def choose(self, top: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        """The finalists reordered so that the winner is first (default: by score)."""
        return top

    def describe(self) -> dict[str, Any]:
        """What ``search_result.json`` should record of how this search scored (default: nothing)."""
        return {}

    @abstractmethod
    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        """The evaluator of this search's candidates."""

    def search_space(self, ctx: SearchContext) -> SearchSpace:
        """The space searched (default: the section's ``space`` with its ``space_options``)."""
        return get_space(ctx.section.space, **ctx.section.space_options)

    def latency_space(self, ctx: SearchContext) -> SearchSpace | None:
        return self.search_space(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])

    # ------------------------------------------------------------------ the search job's entry
    def time_limit_s(self, ctx: SearchContext) -> float | None:
        """Wall seconds the ask/tell loop may run: the search's ``minutes`` (None: no limit)."""
        return ctx.settings.minutes * 60 if ctx.settings.minutes else None

    def prepare(self, ctx: SearchContext) -> None:
        """Refuse a latency target no network of the space can meet, before the search runs."""
        refuse_unreachable_target(self.search_space(ctx), ctx)

    def run(self, ctx: SearchContext) -> SearchResult:
        s, section = ctx.settings, ctx.section
        space = self.search_space(ctx)
        self.begin(space, s.seed, section)
        loop = AskTellLoop(self, self.make_evaluator(ctx), lambda a: ctx.latency.predict(space, a, ctx.num_classes),
                           ctx.latency.target_ms, candidates=section.candidates, time_limit_s=self.time_limit_s(ctx),
                           workers=s.workers, executor=s.executor, ray_address=s.ray_address, run_dir=ctx.run.path,
                           progress=s.progress, echo=ctx.echo, top_k=section.top_k,
                           resources=TaskResources.from_settings(s))
        outcome = loop.run()
        top = self.choose(outcome.top, ctx)
        name = type(self).__qualname__
        if not isinstance(top, list) or not top or not all(isinstance(c, Candidate) for c in top):
            raise SegnasError(f"{name}.choose() returned {str(top)[:80]}: expected the finalists (a non-empty list of "
                              "the Candidates it was given), the winner first; --resume chooses again once fixed")
        described = self.describe()
        try:
            json.dumps(described)
        except (TypeError, ValueError) as exc:
            raise SegnasError(f"{name}.describe(): not JSON ({exc}); --resume writes the result once fixed") from None
        best = top[0]
        details = {**outcome.summary(), **described, "top": [c.to_dict() for c in top],
                   "score": json_float(best.score)}
        if best.final_score is not None:
            details["final_score"] = json_float(best.final_score)
        info = {"score": json_float(best.score), "candidates_scored": outcome.evaluated,
                **{k: v for k, v in described.items() if k == "scoring"}}
        return SearchResult([FoundNetwork("arch", space, best.arch, best.latency_ms, info=info)], details)


class DelegatingStrategy(AskTellStrategy):
    """A strategy whose proposals come from another ask/tell search (``self.search``, made by
    ``make_search``) while it keeps its own evaluator and choice of the winner (SasWOT, the
    weight-sharing search)."""

    @abstractmethod
    def make_search(self, settings: Any) -> AskTellStrategy:
        """The search that proposes (it is begun with this strategy's space, seed and settings)."""

    def begin(self, space: SearchSpace, seed: int, settings: Any) -> None:
        self.space, self.settings = space, settings
        self.search = self.make_search(settings)
        self.search.begin(space, seed, settings)

    def ask(self) -> Architecture:
        return self.search.ask()

    def tell(self, candidates: list[Candidate]) -> None:
        self.search.tell(candidates)

    def tell_skipped(self, skipped: Skipped) -> None:
        self.search.tell_skipped(skipped)

    def rescored(self, scored: Sequence[Candidate]) -> None:
        self.search.rescored(scored)

    def state_dict(self) -> dict[str, Any]:
        return self.search.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search.load_state_dict(state)

@dataclass
class LoopOutcome:
    best: Candidate
    top: list[Candidate]
    evaluated: int
    seconds: float
    rejected: int
    duplicates: int
    stopped: str
    history: list[dict[str, Any]]
    degenerate: int = 0
    refused: int = 0

    def summary(self) -> dict[str, Any]:
        return {"candidates_scored": self.evaluated, "seconds": round(self.seconds, 3),
                "rejected_infeasible": self.rejected, "rejected_degenerate": self.degenerate,
                "refused_by_ask": self.refused,
                "duplicates": self.duplicates, "stopped": self.stopped, "history": self.history}


class AskTellLoop:
    """Drives one ask/tell strategy (see the module docstring). ``latency_fn(arch) -> ms``;
    ``target_ms`` None accepts every proposal. With ``run_dir`` the evaluations go to
    ``<run_dir>/candidates.jsonl`` and the state to ``<run_dir>/search_state.json``."""

    def __init__(self, strategy: AskTellStrategy, evaluator: Evaluator, latency_fn: Callable[[Any], float],
                 target_ms: float | None, *, candidates: int = 1000, time_limit_s: float | None = None,
                 workers: int = 1, executor: str = "inline", ray_address: str | None = None,
                 run_dir: str | Path | None = None, max_draws: int | None = None, top_k: int = 10,
                 progress: bool = False, echo: Echo | None = None,
                 resources: TaskResources | None = None) -> None:
        if candidates < 1 or top_k < 1 or workers < 1:
            raise SegnasError("candidates, top_k and workers must be >= 1")
        if target_ms is not None and not target_ms > 0:
            raise SegnasError(f"target_ms: must be > 0, got {target_ms}")
        self.strategy, self.evaluator, self.latency_fn, self.target_ms = strategy, evaluator, latency_fn, target_ms
        self.candidates, self.time_limit_s, self.top_k = candidates, time_limit_s, top_k
        self.pool = WorkerPool(executor, workers, 1, ray_address, resources=resources)
        self.workers = workers
        self.max_draws = max_draws or 50 * candidates + 1000
        self.progress, self.echo = progress, echo or (lambda m: None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.store = ResultStore(self.run_dir / "candidates.jsonl" if self.run_dir else None)
        self.scored: list[Candidate] = []
        self.by_key: dict[str, Candidate] = {}
        self.latencies: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.best: Candidate | None = None
        self.draws = self.rejected = self.duplicates = self.degenerate = self.refused = 0
        self.last_refusal = ""  # (why the strategy's ask last found nothing valid)
        self.elapsed = 0.0
        self.fastest = math.inf

    # ------------------------------------------------------------------ checkpoint
    @property
    def state_path(self) -> Path | None:
        return self.run_dir / "search_state.json" if self.run_dir else None

    def save(self) -> None:
        if self.state_path is None:
            return
        state = {"strategy": self.strategy_state(), "draws": self.draws, "rejected": self.rejected,
                 "duplicates": self.duplicates, "degenerate": self.degenerate, "refused": self.refused,
                 "last_refusal": self.last_refusal,
                 "elapsed_s": self.elapsed, "history": self.history,
                 "scored": [[c.key, c.latency_ms] for c in self.scored]}
        atomic_write_text(self.state_path, json.dumps(state))

    def strategy_state(self) -> dict[str, Any]:
        """The strategy's ``state_dict``, checked to come back the same from JSON (the form it is
        saved in): a SegnasError naming the first part that does not (a tuple, an int key, an array)."""
        state = self.strategy.state_dict()
        name = type(self.strategy).__qualname__
        try:
            back = json.loads(json.dumps(state))
        except (TypeError, ValueError) as exc:
            raise SegnasError(f"{name}.state_dict(): not JSON ({exc}); a strategy's state is saved as JSON: "
                              "dicts with str keys, lists, numbers, strings, None") from None
        where = json_difference(state, back)
        if where is not None:
            raise SegnasError(f"{name}.state_dict(): {where} does not come back the same from JSON, the form the "
                              "state is saved in (str keys, lists rather than tuples or arrays); a resumed search "
                              "would differ")
        return state

    def resume(self) -> bool:
        if self.state_path is None or not self.state_path.is_file():
            return False
        try:
            state = json.loads(self.state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SegnasError(f"{self.state_path}: damaged (not the JSON a search writes); this run cannot "
                              "continue: start the search again") from None
        self.strategy.load_state_dict(state["strategy"])
        self.draws, self.rejected, self.duplicates = state["draws"], state["rejected"], state["duplicates"]
        self.degenerate = state.get("degenerate", 0)  # (absent from a checkpoint written before it was counted)
        self.refused, self.last_refusal = state.get("refused", 0), state.get("last_refusal", "")
        self.elapsed, self.history = state["elapsed_s"], state["history"]
        space = self.strategy.space
        for key, latency in state["scored"]:
            if key not in self.store:
                raise SegnasError(f"{self.state_path}: names candidate {key}, which candidates.jsonl of the run "
                                  "does not hold (a file of the run deleted or replaced); this run cannot continue: "
                                  "start the search again")
            record = self.store[key]
            self._add(Candidate(space.arch_from_dict(record["arch"]), key, record["score"], latency,
                                len(self.scored) + 1, record))
        self._rerank()
        self.echo(f"resuming the search after {len(self.scored)} evaluated candidates")
        return True

    # ------------------------------------------------------------------ loop
    def _skips(self) -> str:
        """What became of the proposals not evaluated, in words."""
        parts = [f"{n} {what}" for n, what in ((self.duplicates, "duplicates"), (self.rejected, "over the target"),
                                               (self.degenerate, "degenerate")) if n]
        if self.refused:
            last = f"; the last: {self.last_refusal}" if self.last_refusal else ""
            parts.append(f"{self.refused} found nothing valid (the strategy's ask raised{last})")
        return "; ".join(parts) or "none drawn"

    def _say_shortfall(self, stopped: str) -> None:
        """A warning when the search ends short of its candidates, or without a finite score: what
        ``search_result.json`` records in its details, said where the user looks."""
        short = len(self.scored) < self.candidates
        if stopped == "time" and short:
            self.echo(f"note: the search's time limit ended it after {len(self.scored)} of {self.candidates} "
                      "candidates")
        elif stopped == "exhausted" and short:
            warnings.warn(f"the search ended after {len(self.scored)} of {self.candidates} candidates: "
                          f"{self.draws} proposals drawn found nothing more to evaluate ({self._skips()})",
                          SegnasWarning, stacklevel=3)
        if not any(math.isfinite(c.fitness) for c in self.scored):
            warnings.warn(f"no candidate of the {len(self.scored)} evaluated has a finite score: the winner is the "
                          "first evaluated, not a choice (see candidates.jsonl)", SegnasWarning, stacklevel=3)

    def _add(self, cand: Candidate) -> None:
        self.scored.append(cand)
        self.by_key[cand.key] = cand
        if self.best is None or cand.fitness > self.best.fitness:
            self.best = cand

    def _rerank(self) -> None:
        """Scores that are ranks within the population (``Evaluator.population_scores``): every
        candidate scored so far gets its score among all of them, the best follows, and the strategy
        hears of it (``AskTellStrategy.rescored``)."""
        if not self.scored:
            return
        scores = self.evaluator.population_scores([c.record for c in self.scored])
        if scores is None:
            return
        for cand, value in zip(self.scored, scores):
            cand.score = value
        self.best = max(self.scored, key=lambda c: (c.fitness, -c.index))
        self.strategy.rescored(self.scored)

    def _propose(self, want: int) -> list[tuple[str, Any, float]]:
        batch: list[tuple[str, Any, float]] = []
        while len(batch) < want and self.draws < self.max_draws:
            self.draws += 1
            try:
                arch = self.strategy.ask()
            except CannotWrite:  # (no room to write: not a proposal's failure)
                raise
            except SegnasError as exc:  # a proposal that found nothing valid: draw again
                self.refused += 1
                self.last_refusal = str(exc)
                continue
            self._check_proposal(arch)
            key = default_key(arch)
            same = next((b for b in batch if b[0] == key), None)
            if key in self.by_key or same is not None:
                self.duplicates += 1
                earlier = self.by_key.get(key)
                self.strategy.tell_skipped(Skipped(arch, key, "duplicate",
                                                   earlier.latency_ms if earlier else same[2], earlier))
                continue
            if self.strategy.space.defect(arch) is not None:
                self.degenerate += 1
                self.strategy.tell_skipped(Skipped(arch, key, "degenerate"))
                continue
            if key not in self.latencies:
                self.latencies[key] = float(self.latency_fn(arch))
            self.fastest = min(self.fastest, self.latencies[key])
            if self.target_ms is not None and self.latencies[key] > self.target_ms:
                self.rejected += 1
                self.strategy.tell_skipped(Skipped(arch, key, "infeasible", self.latencies[key]))
                continue
            batch.append((key, arch, self.latencies[key]))
        return batch

    def _check_proposal(self, arch: Any) -> None:
        """A SegnasError naming the strategy's ``ask`` when it returned something other than an
        architecture of the space searched (a dict, None, another space's)."""
        space = self.strategy.space
        try:
            same = space.arch_from_dict(arch.to_dict()) == arch
        except (AttributeError, TypeError, SegnasError):
            same = False
        if not same:
            raise SegnasError(f"{type(self.strategy).__qualname__}.ask() returned {type(arch).__name__}: expected an "
                              f"architecture of space {space.name} (space.sample, space.mutate or space.arch_from_dict "
                              "make one)")

    def _evaluate(self, batch: list[tuple[str, Any, float]]) -> list[dict[str, Any]]:
        todo = [(k, a) for k, a, _ in batch if k not in self.store]

        def save(i: int, record: dict[str, Any]) -> None:  # as each evaluation finishes
            check_record(record, self.evaluator)
            self.store.add(todo[i][0], {"arch": todo[i][1].to_dict(), **record})

        try:
            self.pool.map(self.evaluator, [a.to_dict() for _, a in todo], on_result=save)
        except SegnasError as exc:
            defect = exc.__cause__
            machine = (SegnasError, OSError, MemoryError, torch.OutOfMemoryError, WorkerError)  # (not its code's)
            if self.run_dir is None or defect is None or isinstance(defect, machine):
                raise
            # an error in the evaluator's code, raised in a worker process: its traceback (the
            # worker's, which the one line leaves out) kept in the run folder
            kept = self.run_dir / "error.txt"
            atomic_write_text(kept, "".join(traceback.format_exception(defect)))
            raise SegnasError(f"{type(self.evaluator).__qualname__}: {exc} (traceback in {kept}; --resume continues "
                              "the search once it is fixed)") from defect
        return [self.store[k] for k, _, _ in batch]

    def run(self) -> LoopOutcome:
        self.resume()
        self.strategy_state()  # (its JSON form checked before any evaluation, as at every save)
        start = time.perf_counter() - self.elapsed
        stopped = "candidates"
        try:
            with progress_bar(self.progress) as bar:
                task = bar.add_task("search", total=self.candidates, completed=len(self.scored), info="") if bar else None
                while len(self.scored) < self.candidates:
                    if self.time_limit_s is not None and time.perf_counter() - start >= self.time_limit_s:
                        stopped = "time"
                        break
                    want = min(self.workers, self.candidates - len(self.scored))
                    batch = self._propose(want)
                    if not batch:
                        stopped = "exhausted"
                        break
                    new = []
                    for (key, arch, lat), record in zip(batch, self._evaluate(batch)):
                        cand = Candidate(arch, key, record["score"], lat, len(self.scored) + 1, record)
                        self._add(cand)
                        new.append(cand)
                    self._rerank()
                    for cand in new:
                        self.history.append({"n": cand.index, "score": json_float(cand.score),
                                             "latency_ms": cand.latency_ms, "best_score": json_float(self.best.score),
                                             "seconds": round(time.perf_counter() - start, 3)})
                        if bar is not None:
                            bar.update(task, advance=1, info=f"best {num(self.best.score, '.4g')} @ "
                                                             f"{self.best.latency_ms:.1f} ms")
                        if cand.index % 100 == 0:
                            self.echo(f"{cand.index} scored: best {num(self.best.score, '.4g')} at "
                                      f"{self.best.latency_ms:.2f} ms")
                    self.strategy.tell(new)
                    self.elapsed = time.perf_counter() - start
                    self.save()
                    if len(batch) < want:
                        stopped = "exhausted"
                        break
        finally:
            self.pool.close()
            self.store.close()
        self.elapsed = time.perf_counter() - start
        self.save()
        if self.best is None:
            if not math.isfinite(self.fastest):  # no proposal reached the latency check
                raise SegnasError(f"{type(self.strategy).__qualname__}: no architecture to evaluate in {self.draws} "
                                  f"draws: {self._skips()}")
            raise SegnasError(f"target_ms: no sampled network runs within {self.target_ms} ms "
                              f"(fastest of {self.draws} drawn: {self.fastest:.2f} ms); raise the target")
        if not math.isfinite(self.best.fitness):
            diverged = next((c.record["diverged"] for c in self.scored if c.record and c.record.get("diverged")), None)
            if diverged is not None:  # a short-training evaluator none of whose candidates trained
                raise SegnasError(f"evaluator.train: no candidate's short training gave a score ({len(self.scored)} "
                                  f"scored; {diverged}); change evaluator.train.recipe")
        self._say_shortfall(stopped)
        top = sorted(self.scored, key=lambda c: (-c.fitness, c.index))[:self.top_k]
        return LoopOutcome(self.best, top, len(self.scored), self.elapsed, self.rejected, self.duplicates, stopped,
                           self.history, self.degenerate, self.refused)
