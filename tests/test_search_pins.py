"""The searches find the networks pinned at commit cafcd7d (``tests/data/search_pins.json``).

Each tiny search (FasterSeg, SSR, SasWOT) is rerun with the settings, the deterministic FLOPs
latency table and the calls of ``tests/data/make_search_pins.py`` (which made the pins; see its
docstring), and what it finds must equal what the code of cafcd7d found: the architectures
exactly, derived floats (predicted latencies, proxy scores) up to rounding. A refactoring of the
search code must keep these tests passing unchanged; if it changes an API the generator calls,
update the calls in the generator, never the pinned values.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_search_pins", DATA / "make_search_pins.py")
pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins)

PINNED = json.loads((DATA / "search_pins.json").read_text())
REL = 1e-9  # derived floats: the same computation, so the same up to rounding


def as_json(x):
    return json.loads(json.dumps(x))


def test_the_pins_were_made_with_the_generators_settings():
    assert PINNED["pinned_at"] == pins.PINNED_AT and PINNED["seed"] == pins.SEED
    assert PINNED["fasterseg"]["settings"] == as_json(pins.FASTERSEG_SETTINGS)
    assert PINNED["ssr"]["settings"] == as_json(pins.SSR_SETTINGS)
    assert PINNED["saswot"]["settings"] == as_json(pins.SASWOT_SETTINGS)
    assert PINNED["saswot"]["space"] == as_json(pins.SASWOT_SPACE)
    assert set(PINNED["saswot"]["runs"]) == {pins.saswot_run_name(p, w) for p, w in pins.SASWOT_RUNS}


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """``found(method)``: what ``pins.run_<method>`` finds now, run once per module."""
    runs: dict[str, dict] = {}

    def get(method: str) -> dict:
        if method not in runs:
            runs[method] = as_json(getattr(pins, f"run_{method}")(tmp_path_factory.mktemp(method)))
        return runs[method]

    return get


@pytest.fixture
def fasterseg(found):
    return found("fasterseg")


@pytest.fixture
def ssr(found):
    return found("ssr")


# ------------------------------------------------------------------------------ FasterSeg

def test_fasterseg_derives_the_pinned_teacher_and_student(fasterseg):
    pinned = PINNED["fasterseg"]
    assert fasterseg["teacher"] == pinned["teacher"]
    assert fasterseg["student"] == pinned["student"]
    for name in ("teacher", "student"):
        key = f"{name}_predicted_latency_ms"
        assert fasterseg[key] == pytest.approx(pinned[key], rel=REL)


def test_fasterseg_search_epochs_adapt_lambda_and_derive_as_pinned(fasterseg):
    pinned = PINNED["fasterseg"]["epochs"]
    assert [e["lambda"] for e in fasterseg["epochs"]] == [e["lambda"] for e in pinned]
    assert fasterseg["epochs"] == pinned


# ------------------------------------------------------------------------------ SSR
def test_ssr_derives_the_pinned_network(ssr):
    pinned = PINNED["ssr"]
    assert ssr["arch"] == pinned["arch"]
    assert ssr["converged"] == pinned["converged"]
    assert ssr["predicted_latency_ms"] == pytest.approx(pinned["predicted_latency_ms"], rel=REL)


def test_ssr_shrinks_the_space_as_pinned(ssr):
    assert ssr["epochs"] == PINNED["ssr"]["epochs"]


# ------------------------------------------------------------------------------ SasWOT
@pytest.mark.parametrize("proxy,workers", pins.SASWOT_RUNS, ids=[pins.saswot_run_name(*r) for r in pins.SASWOT_RUNS])
def test_saswot_finds_the_pinned_network(proxy, workers, tmp_path):
    found = as_json(pins.run_saswot(tmp_path, workers, proxy))
    pinned = PINNED["saswot"]["runs"][pins.saswot_run_name(proxy, workers)]
    assert found["best"] == pinned["best"]
    for key in ("candidates_scored", "stopped", "rejected", "duplicates"):
        assert found[key] == pinned[key], key
    assert found["best_score"] == pytest.approx(pinned["best_score"], rel=REL)
    assert found["best_latency_ms"] == pytest.approx(pinned["best_latency_ms"], rel=REL)
    assert [(t["arch"], t["index"]) for t in found["top"]] == [(t["arch"], t["index"]) for t in pinned["top"]]
    assert found["scores"] == pytest.approx(pinned["scores"], rel=REL)
