"""The latency predictor study's comparison of two sessions (``latency_predictor.py report
--previous``): networks matched by key whatever their order, each figure of the rounds compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "latency_model"))
import latency_predictor  # noqa: E402


def point(key: str, role: str, measured: float, rounds: list[float], corrected: float | None = None) -> dict:
    return {"space": "s", "size": "8x8", "key": key, "role": role, "measured_ms": measured,
            "corrected_ms": corrected or measured, "rounds_ms": rounds, "probes_ms": [1.0] * len(rounds)}


def test_sessions_are_compared_network_by_network_by_key(tmp_path, monkeypatch):
    monkeypatch.setattr(latency_predictor, "RESULTS", tmp_path)
    earlier = [point("a", "calibration", 10.0, [10.0, 14.0, 14.0]), point("b", "held_out", 20.0, [20.0, 20.0]),
               point("c", "held_out", 30.0, [30.0, 30.0], corrected=30.0),
               point("d", "held_out", 40.0, [40.0, 40.0]), point("gone", "held_out", 5.0, [5.0])]
    (tmp_path / "old.json").write_text(json.dumps({"date": "2026-12-05 03:00:00", "machine": {"cpu": "x"},
                                                   "points": earlier}))
    # another order, one network the earlier session did not measure; b moved by 25%, c by 5%
    here = [point("d", "held_out", 40.0, [40.0, 40.0]), point("new", "held_out", 1.0, [1.0]),
            point("c", "held_out", 31.5, [31.5, 31.5], corrected=32.0),
            point("b", "held_out", 25.0, [25.0, 25.0]), point("a", "calibration", 10.0, [10.0, 10.5, 10.5])]
    out = latency_predictor.across_sessions("old", here, 1)["previous"]
    assert out["networks"] == 4 and out["held_out_networks"] == 3
    assert out["measured_within_10pct"] == pytest.approx(3 / 4)  # all but b
    assert out["measured_median_abs_rel_diff"] == pytest.approx((0.05 + 0.0) / 2)  # of 0, 0.25, 0.05, 0
    # the earlier correction (c: 30) against this measurement (31.5): within; this one (32) against 30: within
    assert out["its_correction_here_within_10pct"] == pytest.approx(2 / 3)
    assert out["this_correction_there_within_10pct"] == pytest.approx(2 / 3)
    figures = out["figures_within_10pct"]
    assert figures["fastest round"] == pytest.approx(3 / 4)
    # a: median 14 before, 10.5 now (-25%); b as above: the median round repeats for 2 of 4
    assert figures["median round"] == pytest.approx(2 / 4)


def test_too_few_shared_networks_give_the_count_only(tmp_path, monkeypatch):
    monkeypatch.setattr(latency_predictor, "RESULTS", tmp_path)
    (tmp_path / "old.json").write_text(json.dumps({"date": "d", "machine": {}, "points": [point("a", "held_out", 1.0, [1.0])]}))
    assert latency_predictor.across_sessions("old", [point("a", "held_out", 1.0, [1.0])], 0) == {
        "previous": {"result": "old", "date": "d", "networks": 1}}
