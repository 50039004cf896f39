"""Every committed benchmark result that reports a trained network names a network that builds: a
zoo name, or the architecture itself (not only a path into an ignored run directory), so that
anyone can train and time it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from segnas.spaces.base import build_from_arch, get_space, list_spaces
from segnas.zoo import MODELS, build_model

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
#: Keys whose presence means a result reports a trained network's accuracy.
TRAINED = ("final_val_miou", "val_miou_mean", "student_val_miou")
#: Results written before architectures were committed with them: the networks must be found again
#: with their benchmarks (issue "same-budget comparisons that reproduce"). Fixing one removes it here.
NO_ARCHITECTURE = {"fasterseg/results/coupled.json", "fasterseg/results/decoupled.json", "ssr/results/main.json"}
#: Results that report trained networks but make no claim about one network: the demo times itself
#: on synthetic data, with networks found anew by every run.
NOT_A_NETWORK = {"demo/results/main.json"}


def reports_training(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in value for k in TRAINED) or any(reports_training(v) for v in value.values())
    return isinstance(value, list) and any(reports_training(v) for v in value)


def networks(result: dict) -> Iterator[tuple[str, Any]]:
    """(label, network) of each trained network a result names: a zoo name or an architecture mapping."""
    model = result.get("model") or ((result.get("settings") or {}).get("model") or {}).get("name")
    if isinstance(model, str) and model in MODELS:
        yield model, model
    if isinstance(result.get("arch"), dict):
        yield "arch", result["arch"]
    if isinstance(result.get("winner"), dict):  # SasWOT: the winner of the result's space
        space = result["space"]["name"] if isinstance(result["space"], dict) else result["space"]
        yield "winner", {"space": space, "arch": result["winner"]}
    for row in result.get("rows") or []:
        if not (isinstance(row, dict) and reports_training(row)):
            continue
        if "name" in row:  # segnas compare: every network of its table
            yield row["name"], row["name"] if row.get("kind") == "zoo" else row.get("arch")
        else:  # a recipe screen: one network per row (a zoo name or a searched architecture) and variant
            yield f"{row['model']}/{row.get('variant')}", row.get("arch") or row["model"]
    runs = result.get("runs") or {}
    for name, run in runs.items() if isinstance(runs, dict) else ():  # GAS, SSR: one derived network per run
        if isinstance(run, dict) and isinstance(run.get("arch"), dict) and reports_training(run):
            yield name, {"space": run.get("space") or space_of(run["arch"]), "arch": run["arch"]}
    searches = result.get("searches") or {}
    for name, run in searches.items() if isinstance(searches, dict) else ():  # the mobile study's winners
        if isinstance(run, dict) and isinstance(run.get("arch"), dict) and reports_training(run):
            yield name, {"space": space_of(run["arch"]), "arch": run["arch"]}
    best = result.get("best_child")
    if isinstance(best, dict) and isinstance(best.get("arch"), dict) and reports_training(best):  # RL
        yield "best_child", {"space": space_of(best["arch"]), "arch": best["arch"]}


def space_of(arch: dict) -> str:
    """The one registered space whose architectures ``arch`` is one of (results that did not record it)."""
    fits = []
    for name in list_spaces():
        try:
            get_space(name).arch_from_dict(arch)
        except Exception:  # noqa: BLE001 - not an architecture of this space
            continue
        fits.append(name)
    assert len(fits) == 1, f"an architecture that fits the spaces {fits}"
    return fits[0]


def build(network: Any):
    return build_model(network, 11) if isinstance(network, str) else build_from_arch(network, 11)


RESULTS = sorted(str(p.relative_to(BENCHMARKS)) for p in BENCHMARKS.glob("*/results/*.json")
                 if reports_training(json.loads(p.read_text())))


@pytest.mark.parametrize("path", RESULTS)
def test_a_result_with_a_trained_network_names_one_that_builds(path):
    if path in NOT_A_NETWORK:
        return
    found = list(networks(json.loads((BENCHMARKS / path).read_text())))
    if path in NO_ARCHITECTURE:
        assert not found, f"{path} now names its network: remove it from NO_ARCHITECTURE"
        return
    assert found, f"{path} reports a trained network but neither a zoo name nor its architecture"
    for label, network in found:
        net = build(network)
        assert sum(p.numel() for p in net.parameters()) > 0, f"{path}: {label}"


def test_the_known_gaps_are_results_that_exist():
    assert NO_ARCHITECTURE | NOT_A_NETWORK <= set(RESULTS)
