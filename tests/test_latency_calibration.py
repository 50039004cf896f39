"""The learned latency correction (``segnas.cost.calibration``): the fit recovers known per-kind
costs, stays at the table when the table is right, and ``LatencyModel.calibrate`` measures, fits,
caches and resumes; the search job calibrates the space it searches."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from segnas.cost import LatencyModel, LatencyTable, Prediction
from segnas.cost import calibration as calib
from segnas.cost.latency_model import space_id
from segnas.cost.table import VERSION as TABLE_VERSION
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.cells import CellsSpace

SPACE = CellsSpace(layout=[1, 1, 1, 1], channels=[4, 8, 8, 8], nodes=2, stem_channels=4, decoder_width=8)
KINDS = [OpKey("conv", 4, 4, 1, 1), OpKey("sep_conv", 4, 4, 1, 1), OpKey("pool", 4, 4, 1, 1, stride=2)]


def synthetic(rng: np.random.Generator, n: int, truth) -> tuple[list[Prediction], list[float]]:
    """``n`` table predictions of random mixes of three operator kinds, and what ``truth`` says they measure."""
    preds, measured = [], []
    for _ in range(n):
        mix = rng.dirichlet([0.5] * 3)  # networks differ in which kinds they are made of
        per_op = [(KINDS[int(rng.choice(3, p=mix))], float(rng.uniform(0.1, 2.0))) for _ in range(int(rng.integers(5, 40)))]
        ops = sum(ms for _, ms in per_op)
        preds.append(Prediction(ops + 0.2, ops, 0.2, per_op))
        measured.append(truth(per_op) + 0.2)
    return preds, measured


def test_kinds_are_op_names_with_their_stride():
    assert calib.op_kind(OpKey("conv", 8, 16, 24, 32)) == "conv"
    assert calib.op_kind(OpKey("sep_conv", 8, 16, 24, 32, stride=2, dilation=2, extra=(("kernel", 5),))) == "sep_conv|s2"


def test_the_fit_recovers_per_kind_costs_the_table_gets_wrong():
    scale = {"conv": 1.3, "sep_conv": 0.7, "pool|s2": 1.0}

    def truth(per_op):
        return sum(scale[calib.op_kind(k)] * ms for k, ms in per_op) + 0.03 * len(per_op)

    rng = np.random.default_rng(0)
    preds, measured = synthetic(rng, 32, truth)
    corr = calib.fit_correction(preds, measured)
    held_p, held_m = synthetic(rng, 50, truth)
    assert calib.median_abs_error([p.total_ms for p in held_p], held_m) > 0.05  # the table is off
    assert calib.median_abs_error([corr.apply(p) for p in held_p], held_m) < 0.01
    assert corr.scale["conv"] == pytest.approx(1.3, abs=0.05) and corr.scale["sep_conv"] == pytest.approx(0.7, abs=0.05)
    assert corr.loo_median_abs_error < 0.01 < corr.table_median_abs_error
    again = calib.LatencyCorrection.from_dict(json.loads(json.dumps(corr.to_dict())))
    assert again.apply(held_p[0]) == pytest.approx(corr.apply(held_p[0]))


def test_the_fit_stays_at_a_table_that_is_right_and_ignores_noise():
    rng = np.random.default_rng(1)
    noise = iter(rng.normal(0.0, 0.02, 1000))
    preds, measured = synthetic(rng, 32, lambda per_op: sum(ms for _, ms in per_op) * (1 + next(noise)))
    corr = calib.fit_correction(preds, measured)
    held_p, held_m = synthetic(rng, 50, lambda per_op: sum(ms for _, ms in per_op))
    assert calib.median_abs_error([corr.apply(p) for p in held_p], held_m) < 0.02
    assert all(abs(s - 1.0) < 0.1 for s in corr.scale.values())


def test_unknown_kinds_keep_the_table_and_too_few_networks_are_refused():
    rng = np.random.default_rng(2)
    preds, measured = synthetic(rng, 12, lambda per_op: sum(1.5 * ms for _, ms in per_op))
    corr = calib.fit_correction(preds, measured)
    other = Prediction(1.2, 1.0, 0.2, [(OpKey("new_op", 1, 1, 1, 1), 1.0)])
    assert corr.apply(other) == pytest.approx(1.2 + corr.per_op_ms + corr.per_mb_ms * 4e-6 + corr.intercept_ms)
    with pytest.raises(SegnasError, match="≥ 4 networks"):
        calib.fit_correction(preds[:3], measured[:3])


def test_calibration_archs_are_distinct_and_a_prefix_of_a_longer_draw():
    short, long = calib.calibration_archs(SPACE, 6), calib.calibration_archs(SPACE, 10)
    assert [SPACE.key(a) for a in short] == [SPACE.key(a) for a in long[:6]]
    assert len({SPACE.key(a) for a in long}) == 10


def model_at(tmp_path, size=(32, 48)) -> LatencyModel:
    table = LatencyTable("eager", threads=1, path=tmp_path / "table.json", min_runs=1, min_time_s=0.0)
    return LatencyModel(table, size)


@pytest.mark.calibration
def test_calibrate_measures_fits_caches_and_predicts_corrected(tmp_path, monkeypatch):
    model = model_at(tmp_path)
    arch = SPACE.sample(np.random.default_rng(5))
    before = model.explain(SPACE, arch, 11)
    assert before.corrected_ms is None and model.predict(SPACE, arch, 11) == before.total_ms
    corr = model.calibrate(SPACE, 11, networks=8, progress=False, min_time_s=0.0)
    assert corr.networks == 8 and corr.info["seconds"] > 0
    after = model.explain(SPACE, arch, 11)
    assert after.total_ms == pytest.approx(before.total_ms) and after.corrected_ms == pytest.approx(corr.apply(after))
    assert model.predict(SPACE, arch, 11) == after.corrected_ms
    assert model.predict_table(SPACE, arch, 11) == after.total_ms
    # cached beside the table: another model of the same context reads it and measures nothing
    fresh = model_at(tmp_path)
    monkeypatch.setattr("segnas.cost.latency_model.measure_networks", lambda *a, **k: pytest.fail("measured again"))
    assert fresh.calibrate(SPACE, 11, networks=8, progress=False).to_dict() == corr.to_dict()
    # other space settings, size or head: their own correction
    assert fresh.correction(CellsSpace(**{**vars(SPACE), "decoder_width": 16}), 11) is None
    assert fresh.correction(SPACE, 19) is None and model_at(tmp_path, (64, 96)).correction(SPACE, 11) is None
    assert space_id(SPACE) != space_id(CellsSpace())
    data = json.loads((tmp_path / "table.corrections.json").read_text())
    assert data["context"] == {**fresh.table.context, "table_version": TABLE_VERSION}
    assert len(data["entries"]) == 1 and not data["measured"]


@pytest.mark.calibration
def test_a_correction_fitted_on_a_busy_machine_serves_its_job_but_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr("segnas.cost.latency_model.other_processes_cores", lambda *a, **k: 1.2)
    model = model_at(tmp_path)
    said: list[str] = []
    corr = model.calibrate(SPACE, 11, networks=8, progress=False, min_time_s=0.0, echo=said.append)
    assert corr.info["other_processes_cores"] == 1.2 and model.correction(SPACE, 11) is not None
    assert any("other processes kept 1.2 cores busy" in m and "not cached" in m for m in said)
    assert model_at(tmp_path).correction(SPACE, 11) is None  # the next job calibrates again
    # ...measuring afresh: the networks timed on the busy machine are not kept for it
    saved = tmp_path / "table.corrections.json"
    assert not saved.exists() or not json.loads(saved.read_text())["measured"]


@pytest.mark.calibration
def test_networks_measured_on_a_busy_host_are_not_kept_for_a_resumed_calibration(tmp_path, monkeypatch):
    monkeypatch.setattr("segnas.cost.latency_model.other_processes_cores", lambda *a, **k: 1.2)

    def killed(space, archs, *args, store=None, **kwargs):
        for arch in archs[:3]:
            store.add(space.key(arch), {"measured_ms": 1.0, "rounds_ms": [1.0], "arch": arch.to_dict()})
        assert all(space.key(a) in store for a in archs[:3])  # this process reads them back
        raise KeyboardInterrupt

    monkeypatch.setattr("segnas.cost.latency_model.measure_networks", killed)
    with pytest.raises(KeyboardInterrupt):
        model_at(tmp_path).calibrate(SPACE, 11, networks=8, progress=False, min_time_s=0.0)
    saved = tmp_path / "table.corrections.json"
    assert not saved.exists() or not json.loads(saved.read_text())["measured"]


@pytest.mark.calibration
def test_a_killed_calibration_resumes_with_the_networks_it_measured(tmp_path, monkeypatch):
    model = model_at(tmp_path)
    real = calib.measure_networks
    timed: list[int] = []

    def counting(space, archs, *args, store=None, **kwargs):
        timed.append(sum(space.key(a) not in store for a in archs))
        return real(space, archs, *args, store=store, **kwargs)

    monkeypatch.setattr("segnas.cost.latency_model.measure_networks", counting)
    key = model._correction_key(SPACE, 11)
    store = model.corrections.measurements(key)
    for arch in calib.calibration_archs(SPACE, 5):  # five networks measured before the kill
        store.add(SPACE.key(arch), {"measured_ms": 1.0, "rounds_ms": [1.0, 1.0, 1.0], "seconds": 0.1,
                                    "arch": arch.to_dict()})
    resumed = model_at(tmp_path)  # a new process: the measurements are read from the cache file
    resumed.calibrate(SPACE, 11, networks=8, progress=False, min_time_s=0.0)
    assert timed == [3]


def test_the_search_job_calibrates_the_space_it_searches(tmp_path, monkeypatch):
    from segnas.jobs.search import make_settings, search_job

    calls = []
    monkeypatch.setattr(LatencyModel, "calibrate", lambda self, space, classes, networks, *a, **k:
                        calls.append((space.name, vars(space).get("base_width"), classes, networks)))
    latency = {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "table_min_runs": 1, "table_min_time_s": 0.0}
    settings = {"data": {"name": "synthetic", "options": {"size": [48, 64], "length": 6}}, "out_dir": str(tmp_path),
                "progress": False, "final": {"epochs": 0},
                "random": {"space_options": {"layers": 6, "base_width": 4}, "candidates": 2,
                           "evaluator": {"proxy": {"images": 4, "batch_size": 2, "size": [32, 48]}}}}
    search_job(make_settings("random", {**settings, "latency": latency}))
    assert calls == [("multires", 4, 11, 32)]
    search_job(make_settings("random", {**settings, "latency": {**latency, "calibration_networks": 0}}))
    assert len(calls) == 1
    with pytest.raises(Exception, match="calibration_networks"):
        make_settings("random", {**settings, "latency": {**latency, "calibration_networks": 3}})
    runs = set(tmp_path.iterdir())
    with pytest.raises(SegnasError, match="latency.probe: model: unknown name 'no_such_net'"):
        search_job(make_settings("random", {**settings, "latency": {**latency, "probe": "no_such_net"}}))
    assert set(tmp_path.iterdir()) == runs  # found before the run directory exists


@pytest.mark.calibration
def test_a_probed_latency_model_gates_its_table_and_its_calibration(tmp_path, monkeypatch):
    """latency.probe: the table times the probe before every entry, and the calibration's networks are
    measured in probe-gated sessions."""
    archs = calib.calibration_archs(SPACE, 8)
    probe = SPACE.build(archs[0], 11).eval()
    table = LatencyTable("eager", threads=1, path=tmp_path / "t.json", min_runs=2, min_time_s=0.0)
    model = LatencyModel(table, (32, 48), probe=probe, probe_name="first")
    assert table.probe is not None and table.probe.name == "first@eager/1t/1x3x32x48"
    seen = []
    real = calib.measure_networks

    def spying(*args, **kwargs):
        seen.append(kwargs.get("probe"))
        return real(*args, **kwargs)

    monkeypatch.setattr("segnas.cost.latency_model.measure_networks", spying)
    model.calibrate(SPACE, 11, networks=8, progress=False, min_time_s=0.0)
    assert seen == [probe] and table.probes and set(table.probes) == set(table.entries)
    # another job on the same cached table reads the stored probes back, and keeps them when it saves
    again = LatencyTable("eager", threads=1, path=tmp_path / "t.json", min_runs=2, min_time_s=0.0)
    LatencyModel(again, (32, 48), probe=probe, probe_name="first")
    assert again.probes == table.probes
    again.save()
    assert LatencyModel(LatencyTable("eager", threads=1, path=tmp_path / "t.json"), (32, 48), probe=probe,
                        probe_name="first").table.probes == table.probes
    other = LatencyTable("eager", threads=1, path=tmp_path / "t.json")
    LatencyModel(other, (32, 48), probe=probe, probe_name="another")
    assert other.probes == {}  # figures of another probe do not compare


def test_unprobed_measured_networks_take_their_quietest_rounds_median(tmp_path, monkeypatch):
    """Without a probe a network's figure is the lowest of its per-round medians (a load only adds time);
    on the runtime, every network gets a positive figure."""
    archs = calib.calibration_archs(SPACE, 2)
    ms = calib.measure_networks(SPACE, archs, 11, (1, 3, 32, 48), "eager", 1, min_time_s=0.0, progress=False)
    assert len(ms) == 2 and all(m > 0 for m in ms)
    rounds = {SPACE.key(a): (12.0 + i, 9.0 + i, 30.0) for i, a in enumerate(archs)}  # round 3 disturbed
    monkeypatch.setattr(calib, "measure_latency_interleaved", lambda models, *a, **k: {
        key: SimpleNamespace(round_medians_ms=rounds[key], round_probe_ms=None) for key in models})
    assert calib.measure_networks(SPACE, archs, 11, (1, 3, 32, 48), "eager", 1, progress=False) == [9.0, 10.0]


def test_a_probed_measurement_keeps_each_rounds_probe_and_takes_one_state_for_all():
    """With a probe every record keeps its rounds' probes; the figures come from the rounds whose probe
    ran within the tolerance over the reference probe (the lower quartile of every network's probes, of
    any session), else from the median of the network's rounds."""
    from segnas.parallel.store import ResultStore

    archs = calib.calibration_archs(SPACE, 3)
    probe = SPACE.build(archs[0], 11).eval()
    store = ResultStore()
    ms = calib.measure_networks(SPACE, archs, 11, (1, 3, 32, 48), "eager", 1, store=store, chunk=2,
                                min_time_s=0.0, rounds=2, progress=False, probe=probe)
    records = [store[SPACE.key(a)] for a in archs]
    assert all(len(r["probes_ms"]) == len(r["rounds_ms"]) >= 2 for r in records)
    assert ms == calib.measured_figures(records) and all(m > 0 for m in ms)
    # figures by hand: the probes' lower quartile is 1.065 ms; rounds probed up to 1.1715 are kept, and
    # the third network, never timed in that state, gets the median of its rounds
    hand = [{"measured_ms": 9.0, "rounds_ms": [10.0, 20.0, 12.0], "probes_ms": [1.0, 2.0, 1.08]},
            {"measured_ms": 30.0, "rounds_ms": [30.0, 40.0], "probes_ms": [1.5, 1.05]},
            {"measured_ms": 5.0, "rounds_ms": [5.0, 7.0], "probes_ms": [1.6, 1.7]}]
    assert calib.measured_figures(hand) == [11.0, 40.0, 6.0]
    # a rare fast spell (one probe at 0.5 ms) is not the reference: the other networks, never timed in
    # it, keep their figures of the usual state (taking 0.5 ms as the state would leave them none)
    rare = [{**hand[0], "rounds_ms": [10.0, 20.0, 12.0, 8.0], "probes_ms": [1.0, 2.0, 1.08, 0.5]}] + hand[1:]
    assert calib.measured_figures(rare) == [10.0, 40.0, 6.0]
    # a record without probes (measured unprobed): every figure is the quietest round
    assert calib.measured_figures(hand[:2] + [{"measured_ms": 5.0, "rounds_ms": [5.0]}]) == [9.0, 30.0, 5.0]


def test_a_session_run_in_a_slow_spell_waits_for_the_others_state_and_is_timed_again(monkeypatch):
    """The second session of a probed measurement runs wholly in a slow spell (probe 2 ms, networks
    twice as slow): it is given the first session's probes to wait for their state, and its networks,
    without a round in that state, are timed again; every figure then comes from the fast state."""
    archs = calib.calibration_archs(SPACE, 4)
    fast = {SPACE.key(a): 10.0 + i for i, a in enumerate(archs)}
    calls: list[tuple[list[str], int]] = []

    def scripted(models, *args, earlier_probes=(), **kwargs):
        calls.append((list(models), len(earlier_probes)))
        slow = len(calls) == 2  # the second session: a slow spell throughout
        return {k: SimpleNamespace(round_medians_ms=(fast[k] * (2 if slow else 1),) * 3,
                                   round_probe_ms=((2.0 if slow else 1.0),) * 3) for k in models}

    monkeypatch.setattr(calib, "measure_latency_gated", scripted)
    ms = calib.measure_networks(SPACE, archs, 11, (1, 3, 32, 48), "eager", 1, chunk=2, progress=False,
                                probe=SPACE.build(archs[0], 11))
    keys = [SPACE.key(a) for a in archs]
    assert [c[1] for c in calls] == [0, 6, 12] and calls[2][0] == keys[2:]
    assert ms == [fast[k] for k in keys]


def test_a_probed_table_times_again_the_entries_timed_in_a_slow_state(tmp_path, monkeypatch):
    """Each entry keeps the probe's median from just before its timing; entries timed over 10% above
    the reference probe (the lower quartile of the table's probes) are timed again (twice at most)
    and keep the timing of the faster state."""

    class Scripted:
        name = "scripted"

        def __init__(self, values):
            self.values = iter(values)

        def __call__(self):
            return next(self.values)

    keys = list({k.to_str(): k for a in calib.calibration_archs(SPACE, 2)
                 for k in SPACE.latency_keys(a, 11, (32, 48))}.values())[:3]
    timings = iter([5.0, 9.0, 4.0, 7.0, 8.0])
    path = tmp_path / "table.json"
    table = LatencyTable("eager", threads=1, path=path, probe=Scripted([1.0, 2.0, 1.05, 1.5, 3.0]))
    monkeypatch.setattr(table, "_measure", lambda key: next(timings))
    monkeypatch.setattr("segnas.cost.table.other_processes_cores", lambda: 0.0)  # a quiet machine: entries kept
    assert table.ensure(keys, progress=False) == 3
    names = [k.to_str() for k in keys]
    # the second entry: timed at probe 2.0 (9 ms), again at 1.5 (7 ms, kept), again at 3.0 (8 ms, not kept)
    assert [table.entries[n] for n in names] == [5.0, 7.0, 4.0]
    assert [table.probes[n] for n in names] == [1.0, 1.5, 1.05] and table.unsteady(keys) == [keys[1]]
    saved = json.loads(path.read_text())
    assert saved["probe"] == "scripted" and saved["probes"][names[1]] == 1.5
    assert LatencyTable("eager", threads=1, path=path, probe=Scripted([])).probes == table.probes
    unprobed = LatencyTable("eager", threads=1, path=path)
    assert unprobed.probes == {} and unprobed.unsteady(keys) == [] and unprobed.entries == table.entries


def test_a_correction_kept_for_one_process_is_never_written_by_a_later_save(tmp_path):
    path = tmp_path / "corrections.json"
    cache = calib.CorrectionCache(path, {"machine": "m"})
    fitted = calib.LatencyCorrection(kinds=["conv"], scale={"conv": 1.1}, per_op_ms=0.0, per_mb_ms=0.0,
                                     intercept_ms=0.5, ridge=1.0, networks=8, loo_median_abs_error=0.05,
                                     table_median_abs_error=0.2)
    cache.put("busy", fitted, persist=False)
    cache.measurements("another").add("arch", {"measured_ms": 1.0})  # saves the file
    assert cache.get("busy") == fitted
    saved = json.loads(path.read_text())
    assert saved["entries"] == {} and "arch" in saved["measured"]["another"]
    assert calib.CorrectionCache(path, {"machine": "m"}).get("busy") is None
    cache.put("busy", fitted)  # a later, quiet fit is cached
    assert calib.CorrectionCache(path, {"machine": "m"}).get("busy") == fitted


def fitted_correction() -> calib.LatencyCorrection:
    return calib.LatencyCorrection(kinds=["conv"], scale={"conv": 1.1}, per_op_ms=0.0, per_mb_ms=0.0, intercept_ms=0.5,
                                   ridge=1.0, networks=8, loo_median_abs_error=0.05, table_median_abs_error=0.2)


def test_corrections_of_another_table_version_or_shape_are_refitted_not_used(tmp_path):
    path = tmp_path / "corrections.json"
    old = calib.CorrectionCache(path, {"machine": "m", "table_version": TABLE_VERSION - 1})
    old.put("space", fitted_correction())
    with pytest.warns(UserWarning, match="latency corrections unusable"):
        assert calib.CorrectionCache(path, {"machine": "m", "table_version": TABLE_VERSION}).get("space") is None
    for shape in ([1, 2], {"format": calib.FORMAT, "version": calib.VERSION, "context": {"machine": "m"},
                           "entries": []}):
        path.write_text(json.dumps(shape))
        with pytest.warns(UserWarning, match="latency corrections unusable"):
            assert calib.CorrectionCache(path, {"machine": "m"}).get("space") is None


def test_a_rank_adopting_rank_0s_correction_writes_nothing(tmp_path):
    path = tmp_path / "corrections.json"
    context = {"machine": "m"}
    calib.CorrectionCache(path, context).measurements("space").add("arch", {"measured_ms": 1.0})  # a killed calibration
    rank0, rank1 = calib.CorrectionCache(path, context), calib.CorrectionCache(path, context)  # both resume it
    rank0.put("space", fitted_correction())
    rank1.hold("space", fitted_correction())
    assert rank1.get("space") == fitted_correction()
    assert calib.CorrectionCache(path, context).get("space") == fitted_correction()
