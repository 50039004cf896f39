"""`segnas compare`: two methods and a zoo network end to end, resume after kill -9 to the same
table, bad input (unknown method, a target a method cannot meet, no test split), the interleaved
latency session and the Pareto plot."""

from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from segnas.config.compare import CompareSettings
from segnas.config.io import build_config
from segnas.errors import SegnasError, TargetOutOfReach
from segnas.jobs.compare import compare_job, failed_rows
from segnas.spaces.base import arch_key, build_from_arch, get_space

SIZE = [32, 48]
SPACE = {"space_options": {"layers": 6, "base_width": 4}}
SCORING = {"proxy": "nwot", "images": 2, "batch_size": 2, "size": SIZE}
SASWOT = {"saswot": {**SPACE, "candidates": 3, "population": 2, "sample_size": 2, "top_k": 1, "final_inits": 0,
                     "scoring": SCORING}}
RANDOM = {"random": {**SPACE, "candidates": 2, "top_k": 1, "evaluator": {"proxy": SCORING}}}
HEAD = ["network", "kind", "val mIoU %", "test mIoU %", "latency ms", "vs target", "at search ms", "params M", "GFLOPs",
        "search CPU-h", "train CPU-h", "status"]


def tiny(out: Path, **over) -> dict:
    """Settings of a seconds-long comparison on tiny synthetic scenes (target out of the way)."""
    cfg = {"data": {"name": "synthetic", "options": {"size": SIZE, "length": 4}, "batch_size": 2,
                    "eval_batch_size": 4},
           "latency": {"target_ms": 1e9, "size": SIZE, "backend": "eager", "table_min_runs": 1,
                       "table_min_time_s": 0.0, "calibration_networks": 0},
           "methods": {"saswot": SASWOT, "random": RANDOM}, "zoo": ["fast_scnn"], "train": {"steps": 2, "seeds": 1},
           "measure_min_runs": 2, "measure_min_time_s": 0.0, "threads": 1, "progress": False, "report": False,
           "out_dir": str(out)}
    cfg.update(over)
    return cfg


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One latency table and dataset-check cache for this file's tests, apart from the user's."""
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path_factory.getbasetemp() / "compare-cache"))


def run_compare(cfg: dict) -> tuple[dict, list[str]]:
    lines: list[str] = []
    summary = compare_job(build_config(CompareSettings, cfg), echo=lines.append)
    return summary, lines


def table_head(md: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith("| network"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_two_methods_and_a_zoo_network_end_to_end(tmp_path):
    summary, lines = run_compare(tiny(tmp_path / "runs", train={"steps": 2, "seeds": 2}))
    run = Path(summary["run_dir"])
    for name in ("config.yaml", "jobs.jsonl", "latency.json", "compare.json", "compare.md", "pareto.png"):
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob("*") if p.is_dir() and not any(p.iterdir())]  # no empty folder left
    # every job's end is told, on the terminal and in the comparison's log
    ended = [x for x in lines if x.startswith(("search:", "train:"))]
    assert len(ended) == 2 + 3 * 2 and any(x.startswith("train:fast_scnn:seed1: done, val mIoU") for x in ended)
    assert all(x in (run / "log.txt").read_text() for x in ended)
    log = (run / "log.txt").read_text()
    assert " compare: saswot, random for " in log and " measuring 3 networks in one interleaved session" in log
    # what every training's log notes is said once for all (a 2-step budget inside the warm-up)
    warm = [n for n in summary["notes"] if "ends within the learning rate's" in n]
    assert len(warm) == 1 and warm[0].startswith("every final training: the 2-step budget ends within"), warm
    data = json.loads((run / "compare.json").read_text())
    assert [(r["name"], r["kind"]) for r in data["rows"]] == [("saswot", "method"), ("random", "method"),
                                                               ("fast_scnn", "zoo")]
    assert data["latency"] == "eager, 1 thread, 32x48" and data["test_split"] == "test"
    for row in data["rows"]:  # the target is out of the way: found networks land far under it
        method = row["kind"] == "method"
        assert row["status"] == ("under target (-100%)" if method else "ok") and [s["seed"] for s in row["seeds"]] == [0, 1]
        assert row["on_target"] is (False if method else None)
        assert (row["search_measured_ms"] > 0) if method else row["search_measured_ms"] is None
        vals = [s["val_miou"] for s in row["seeds"]]
        assert all(0.0 <= v <= 1.0 for v in vals) and row["val_miou_mean"] == pytest.approx(np.mean(vals))
        assert row["val_miou_std"] == pytest.approx(np.std(vals, ddof=1))
        assert all(s["steps"] == 2 and s["test_miou"] is not None for s in row["seeds"])
        assert len(row["per_class_iou"]) == 11 and "Road" in row["seeds"][0]["per_class_iou"]
        assert row["latency_ms"] > 0 and row["params"] > 0 and row["gflops"] > 0
        assert row["train_cpu_seconds"] > 0
        assert (run / row["seeds"][0]["run_dir"] / "checkpoints" / "best.pt").is_file()
    for row in data["rows"][:2]:
        assert (run / row["arch_file"]).is_file() and row["search_cpu_seconds"] is not None
        assert row["arch"] == json.loads((run / row["arch_file"]).read_text())
        assert build_from_arch(row["arch"], 11) is not None
    assert data["rows"][2]["search_cpu_seconds"] is None and data["total_cpu_hours"] > 0
    md = (run / "compare.md").read_text()
    assert table_head(md) == HEAD
    assert "Per-class val IoU" in md and "Per-class test IoU" in md and "| Road |" in md
    assert all(len(r["test_per_class_iou"]) == 11 for r in data["rows"])
    # every job ran once: 2 searches, 3 networks x 2 seeds
    keys = [json.loads(x)["key"] for x in (run / "jobs.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(["search:saswot", "search:random"] +
                                  [f"train:{n}:seed{s}" for n in ("saswot", "random", "fast_scnn") for s in (0, 1)])
    # one job at a time: the searches, then every network's first seed before any second one
    assert keys == ["search:saswot", "search:random"] + [f"train:{n}:seed{s}" for s in (0, 1)
                                                         for n in ("saswot", "random", "fast_scnn")]


def test_status_shows_every_planned_job_and_what_the_finished_ones_scored(tmp_path):
    from segnas.cli.main import app
    from segnas.jobs.compare import compare_status
    from segnas.report.compare_md import status_table

    summary, _ = run_compare(tiny(tmp_path / "runs", methods={"random": RANDOM}, train={"steps": 2, "seeds": 2}))
    run = Path(summary["run_dir"])
    status = compare_status(run)
    jobs = run / "jobs.jsonl"
    ran = [json.loads(x)["key"] for x in jobs.read_text().splitlines()]
    assert [j["job"] for j in status["jobs"]] == ran  # planned in the order the comparison ran them
    assert all(j["state"] == "done" for j in status["jobs"])
    scored = {(r["name"], s["seed"]): s["val_miou"] for r in summary["rows"] for s in r["seeds"]}
    assert {(j["name"], j["seed"]): j["val_miou"] for j in status["jobs"] if j["kind"] == "train"} == scored
    # a training whose result is not recorded but whose run exists has started; one without a run is pending
    lines = jobs.read_text().splitlines()
    jobs.write_text("".join(x + "\n" for x in lines if "train:random" not in x) + '{"key": "train:fast')
    shutil.rmtree(run / "train" / "random-seed1")
    states = {j["job"]: j for j in compare_status(run)["jobs"]}
    assert jobs.read_text().endswith('{"key": "train:fast')  # read only: a line being written is left alone
    started = states["train:random:seed0"]
    assert started["state"] == "started" and "step 2 of 2" in started["progress"]
    assert states["train:random:seed1"]["state"] == "pending"
    result = CliRunner().invoke(app, ["compare", "--status", str(run)])
    assert result.exit_code == 0, result.output
    assert "| train:random:seed1 | pending |" in result.output and "3 of 5 jobs ended" in result.output
    assert "left: 2 trainings (~" in result.output  # timed by the finished ones
    # a training that ran on a GPU shows its GPU-hours
    gpu = json.loads(lines[-1])
    gpu["result"].update(train_cpu_seconds=None, train_gpu_seconds=1800.0, device="cuda (a GPU)")
    jobs.write_text("".join(x + "\n" for x in lines[:-1]) + json.dumps(gpu) + "\n")
    shown = status_table(compare_status(run))
    assert f"| {gpu['key']} | done |" in shown and "| 0.500 GPU-h |" in shown
    # ... and the trainings left are timed by the GPU's when the finished ones ran on one
    on_gpu = [json.loads(x) for x in lines]
    for job in on_gpu:
        if job["key"].startswith("train:"):
            job["result"].update(train_cpu_seconds=None, train_gpu_seconds=1800.0)
    jobs.write_text("".join(json.dumps(j) + "\n" for j in on_gpu if j["key"] != "train:random:seed1"))
    assert compare_status(run)["remaining"]["hours"]["train"] == pytest.approx(0.5)
    # the trainings of a method whose search failed are skipped
    failed = json.dumps({"key": "search:random", "result": {"status": "failed: latency.target_ms: too low"}})
    jobs.write_text("".join(x + "\n" for x in lines if "random" not in x) + failed + "\n")
    states = {j["job"]: j for j in compare_status(run)["jobs"]}
    assert states["search:random"]["state"] == "failed" and states["train:random:seed1"]["state"] == "skipped"
    assert f"`segnas compare --resume {run} --rerun NAME` runs NAME's jobs again (e.g. after a fix; failed: random)" \
        in status_table(compare_status(run))
    # a sample-based search under way shows how many candidates it scored
    jobs.write_text("".join(x + "\n" for x in lines if "random" not in x))
    search_run = next(p for p in (run / "search" / "random").iterdir() if (p / "candidates.jsonl").is_file())
    scored_now = len((search_run / "candidates.jsonl").read_text().splitlines())
    progress = {j["job"]: j for j in compare_status(run)["jobs"]}["search:random"]
    assert progress["state"] == "started" and progress["progress"] == f"candidates scored {scored_now}"
    # --status on a run of another kind, and a report of a comparison under way: one clear line each
    trained = next((run / "train" / "fast_scnn-seed0").iterdir())
    result = CliRunner().invoke(app, ["compare", "--status", str(trained)])
    assert result.exit_code == 2 and "a training run, not a comparison run" in result.output
    (run / "compare.json").rename(run / "compare.json.away")
    result = CliRunner().invoke(app, ["report", str(run), "--no-latency", "--samples", "0"])
    assert result.exit_code == 2 and "a comparison without its table yet (no compare.json" in result.output


def test_a_label_that_would_clash_or_break_paths_is_refused(tmp_path):
    for label in ("fast_scnn", "a/b", "x:y"):
        with pytest.raises(SegnasError, match="a label names folders and jobs"):
            run_compare(tiny(tmp_path / "runs", methods={label: {"method": "random", **RANDOM}}))
    assert not (tmp_path / "runs").exists()


def test_a_finished_comparison_is_collected_and_rendered_with_its_architectures(tmp_path):
    """benchmarks/compare/collect.py copies a run's figures, table and plot into a results folder;
    the README's table generator renders every network of it, test column included."""
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    sys.path.insert(0, str(benchmarks / "compare"))
    import collect
    import readme_tables

    summary, _ = run_compare(tiny(tmp_path / "runs", methods={"random": RANDOM}))
    out = tmp_path / "results"
    path = collect.collect(Path(summary["run_dir"]), "tiny", out)
    assert {p.name for p in out.iterdir()} == {"tiny.json", "tiny.md", "tiny.png"}
    result = json.loads(path.read_text())
    assert result["benchmark"] == "tiny" and "machine" in result
    found = next(r for r in result["rows"] if r["kind"] == "method")
    assert build_from_arch(found["arch"], 11) is not None
    table = readme_tables.compare_table(result)
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[:4] == ["network", "kind", "val mIoU", "test mIoU"]
    body = [line for line in table[2:] if line.startswith("| ")]
    assert sorted(line.split(" | ")[0].strip("| ") for line in body) == ["fast_scnn", "random"]
    with pytest.raises(SystemExit, match="no compare.json"):
        collect.collect(tmp_path, "none", out)


def test_rerun_runs_one_networks_jobs_again_and_keeps_the_others(tmp_path):
    """--rerun forgets a method's search and trainings (its folders and the stale results move to
    discarded/), the resume runs them again and every other job stays as it ended; a name that is not
    in the comparison is one line naming it, found before anything changes."""
    run = Path(compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", methods={"random": RANDOM})))["run_dir"])
    jobs = run / "jobs.jsonl"
    before = {json.loads(x)["key"]: x for x in jobs.read_text().splitlines()}
    old_search = sorted((run / "search" / "random").iterdir())
    said: list[str] = []
    with pytest.raises(SegnasError, match=r"--rerun \(rerun\): gas: not a network of this comparison"):
        compare_job(None, resume=run, rerun=["gas"], measure=False, echo=said.append)
    assert not any(x.startswith("compare: ") for x in said), said  # refused before the comparison's banner
    assert {json.loads(x)["key"]: x for x in jobs.read_text().splitlines()} == before
    lines: list[str] = []
    compare_job(None, resume=run, rerun=["random"], measure=False, echo=lines.append)
    order = [json.loads(x)["key"] for x in jobs.read_text().splitlines()]
    after = {json.loads(x)["key"]: x for x in jobs.read_text().splitlines()}
    rerun = {key for key in before if key.endswith(":random") or ":random:" in key}
    assert set(after) == set(before) and len(order) == len(after) and rerun
    assert set(order[-len(rerun):]) == rerun  # run again: appended by the resume (a rerun may give equal figures)
    assert all(after[key] == before[key] for key in before if key not in rerun)
    assert (run / "train" / "random-seed0").is_dir() and (run / "search" / "random").is_dir()
    (away,) = (run / "discarded").iterdir()
    assert sorted(p.name for p in (away / "search" / "random").iterdir()) == [p.name for p in old_search]
    assert (away / "train" / "random-seed0").is_dir() and (away / "compare.json").is_file()
    from segnas.jobs.compare import read_store

    assert rerun <= set(read_store(away / "jobs.jsonl")[0])  # the records the rerun replaced, kept
    assert not (run / "compare.json").exists() and any(line.startswith("run again: search:random") for line in lines)


def test_the_readmes_verdict_is_the_comparisons_own():
    """The README's generated comparison says what `segnas compare` says (``report.verdict``), with
    the unseen split's mIoU; a faster, more accurate network over the target takes no part."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import readme_tables

    from segnas.report.verdict import compare_verdict

    def row(name, kind, val, ms):
        return {"name": name, "kind": kind, "val_miou_mean": val, "test_miou_mean": val - 0.2, "latency_ms": ms,
                "latency_vs_target": ms / 15.0 - 1}

    result = {"target_ms": 15.0, "test_split": "holdout",
              "rows": [row("a", "method", 0.60, 14.0), row("b", "method", 0.55, 9.0),
                       row("z", "zoo", 0.58, 10.0), row("big", "zoo", 0.70, 40.0)]}
    (line,) = [x for x in readme_tables.compare_verdict(result) if x]
    assert line == compare_verdict(result)[0]
    assert "a (method): val mIoU 60.00%, holdout mIoU 40.00% at 14.00 ms" in line and "big" not in line
    assert line.endswith("z (zoo): val mIoU 58.00%, holdout mIoU 38.00% at 10.00 ms (-33.3%), is 2.00 val mIoU "
                         "points below.")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segnas.cli.main", *args]


#: Figures that depend on the machine's speed or on where the run lives, left out when comparing runs.
TIMINGS = {"latency_ms", "latency_iqr_ms", "latency_vs_target", "search_measured_ms", "search_vs_target",
           "measured_ms", "on_target", "search_cpu_seconds", "latency_rounds",
           "train_cpu_seconds", "total_cpu_hours", "latency_setup_cpu_hours", "run_dir", "arch_file", "notes",
           "out_dir"}


def _without_timings(data):
    if isinstance(data, dict):
        return {k: _without_timings(v) for k, v in data.items() if k not in TIMINGS}
    if isinstance(data, list):
        return [_without_timings(v) for v in data]
    return data


@pytest.mark.slow
def test_a_comparison_killed_mid_way_resumes_to_the_same_table(tmp_path):
    """kill -9 once the first job has finished, --resume: the same compare.json (timings aside) as
    an uninterrupted run, and no finished job run again."""
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(tiny(tmp_path / "unused", methods={"random": RANDOM})))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEGNAS_CACHE": str(tmp_path / "cache")}
    whole = subprocess.run(_cli("compare", "-c", str(config), "--set", f"out_dir={tmp_path / 'whole'}"),
                           capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(_cli("compare", "-c", str(config), "--set", f"out_dir={tmp_path / 'killed'}"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run = time.time() + 120, None
    while time.time() < deadline and proc.poll() is None:
        jobs = list((tmp_path / "killed").glob("*/jobs.jsonl"))
        if jobs and jobs[0].read_text().count("\n") >= 1:
            run = jobs[0].parent
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run is not None and not (run / "compare.json").exists(), "the comparison ended before it was killed"
    before = (run / "jobs.jsonl").read_text().splitlines()
    resumed = subprocess.run(_cli("compare", "--resume", str(run)), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    after = [json.loads(x)["key"] for x in (run / "jobs.jsonl").read_text().splitlines()]
    assert after[:len(before)] == [json.loads(x)["key"] for x in before] and len(after) == len(set(after)) == 3
    first = next((tmp_path / "whole").iterdir())
    read = lambda d: _without_timings(json.loads((d / "compare.json").read_text()))  # noqa: E731
    assert read(run) == read(first)
    def table(d: Path) -> list[list[str]]:  # every column but the timings
        rows = [x.split("|") for x in (d / "compare.md").read_text().splitlines() if x.startswith("| ")]
        return [r[1:5] + r[-2:] for r in rows]

    assert table(run) == table(first)


def test_an_unknown_method_is_one_line_before_any_work(tmp_path):
    from segnas.cli.main import app

    result = CliRunner().invoke(app, ["compare", "--set", "methods=[saswot, nosuch]", "--set", "latency.target_ms=5",
                                      "--set", "latency.size=[32, 48]", "--set", f"out_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "'nosuch'" in lines[0] and "saswot" in lines[0] and "random" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_one_method_twice_under_two_labels(tmp_path):
    """``methods: {random: ..., random-small: {method: random, ...}}``: two searches of one method, two rows."""
    small = {"method": "random", "random": {**RANDOM["random"], "space_options": {"layers": 5, "base_width": 4}}}
    summary, _ = run_compare(tiny(tmp_path / "runs", methods={"random": RANDOM, "random-small": small}, zoo=[]))
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"random", "random-small"}
    assert rows["random"]["method"] == rows["random-small"]["method"] == "random"
    run = Path(summary["run_dir"])
    layers = {label: yaml.safe_load(next((run / "search" / label).glob("*/config.yaml")).read_text())
              ["random"]["space_options"]["layers"] for label in rows}
    assert layers == {"random": 6, "random-small": 5}


def test_a_label_without_a_known_method_is_refused_naming_it(tmp_path):
    with pytest.raises(SegnasError, match=r"methods\.fast-one: unknown method 'fast-one'"):
        run_compare(tiny(tmp_path / "runs", methods={"fast-one": RANDOM}))
    with pytest.raises(SegnasError, match=r"methods\.fast-one: unknown method 'nosuch'"):
        run_compare(tiny(tmp_path / "runs", methods={"fast-one": {"method": "nosuch"}}))
    assert not (tmp_path / "runs").exists()


def test_a_method_failing_on_its_input_is_refused_before_any_search_starts(tmp_path):
    """A check the second method's search makes on the data (its proxy's images against the split)
    refuses the comparison before the first method searches, naming the method."""
    many = {"random": {**RANDOM["random"], "evaluator": {"proxy": {**SCORING, "images": 50}}}}
    with pytest.raises(SegnasError, match=r"methods\.random: random\.evaluator\.proxy\.images: 50 images.*holds 4"):
        run_compare(tiny(tmp_path / "runs", methods={"saswot": SASWOT, "random": many}, zoo=[]))
    assert not (tmp_path / "runs").exists()


def test_a_defect_in_a_methods_checks_is_one_line_naming_the_method(tmp_path, monkeypatch):
    from segnas.search.strategies.saswot import SasWOT

    def broken(self, ctx):
        raise RuntimeError("a bug in the method")

    monkeypatch.setattr(SasWOT, "prepare", broken)
    with pytest.raises(SegnasError, match=r"methods\.saswot: its search failed its checks: RuntimeError: a bug"):
        run_compare(tiny(tmp_path / "runs", zoo=[]))
    assert not (tmp_path / "runs").exists()


def test_a_methods_check_failing_on_a_setting_the_comparison_fixes_names_that_setting(tmp_path, monkeypatch):
    from segnas.errors import SegnasError as Refused
    from segnas.jobs.compare import method_error
    from segnas.search.strategies.saswot import SasWOT

    def refuses(self, ctx):
        raise Refused("latency.size: the space needs a multiple of 32, got 50x64")

    monkeypatch.setattr(SasWOT, "prepare", refuses)
    with pytest.raises(SegnasError, match=r"^latency\.size: the space needs .* \(the comparison's setting, for "
                                          r"methods\.saswot\)$"):
        run_compare(tiny(tmp_path / "runs", zoo=[]))
    assert not (tmp_path / "runs").exists()
    assert method_error("a", "minutes: too few") == "search_cpu_minutes: too few (the comparison's setting, for methods.a)"
    assert method_error("a", "a.evaluator.images: 9") == "methods.a: a.evaluator.images: 9"
    assert method_error("a", "latency.size (--size): too big") == \
        "latency.size: too big (the comparison's setting, for methods.a)"


def test_a_shared_setting_given_per_method_names_the_top_level_one_to_set(tmp_path):
    with pytest.raises(SegnasError, match=r"methods\.random\.minutes: .*top-level 'search_cpu_minutes'"):
        run_compare(tiny(tmp_path / "runs", methods={"random": {**RANDOM, "minutes": 3}}))
    with pytest.raises(SegnasError, match=r"methods\.random\.seed: .*top-level 'seed'"):
        run_compare(tiny(tmp_path / "runs", methods={"random": {**RANDOM, "seed": 3}}))
    assert not (tmp_path / "runs").exists()


def test_a_cpu_time_budget_on_a_gpu_is_refused_before_any_work(tmp_path, monkeypatch):
    import segnas.jobs.compare as compare

    monkeypatch.setattr(compare, "resolve_device", lambda device: torch.device("cuda"))  # as on a GPU machine
    with pytest.raises(SegnasError, match=r"train\.cpu_minutes: .*train\.steps"):
        run_compare(tiny(tmp_path / "runs", device="cuda", train={"cpu_minutes": 1, "seeds": 1}))
    assert not (tmp_path / "runs").exists()


def test_a_gpu_training_records_the_wall_clock_of_its_epochs(tmp_path, monkeypatch):
    import segnas.jobs.compare as compare

    cfg = build_config(CompareSettings, tiny(tmp_path / "runs"))
    train = compare.train_config(cfg, "fast_scnn", {"name": "fast_scnn"}, 0, tmp_path / "train")
    monkeypatch.setattr(compare, "resolve_device", lambda device: torch.device("cuda"))  # recorded as a GPU's
    out = compare.run_training({"config": train.model_dump(mode="json"), "root": str(tmp_path)})
    metrics = [json.loads(x) for x in next((tmp_path / "train").glob("*/metrics.jsonl")).read_text().splitlines()]
    assert out["status"] == "ok" and out["train_cpu_seconds"] is None
    assert out["train_gpu_seconds"] == pytest.approx(sum(m["epoch_s"] for m in metrics), abs=1e-3)


@pytest.mark.parametrize("device,threads,workers,cpus,gpus", [("cpu", 4, 2, 4.0, 0.0), ("cuda", None, 4, 1.0, 0.25)])
def test_jobs_on_ray_reserve_their_threads_and_a_share_of_the_gpu(tmp_path, monkeypatch, device, threads, workers,
                                                                 cpus, gpus):
    import segnas.jobs.compare as compare

    seen = {}
    monkeypatch.setattr(compare, "resolve_device", lambda d: torch.device(d))
    monkeypatch.setattr(compare, "run_all", lambda fn, items, **kw: seen.update(kw) or [{} for _ in items])
    cfg = build_config(CompareSettings, tiny(tmp_path, executor="ray", device=device, threads=threads,
                                             workers=workers))
    compare.run_jobs(cfg, tmp_path, [{"key": "train:x:seed0"}])
    assert (seen["resources"].cpus, seen["resources"].gpus) == (cpus, gpus)
    assert seen["threads_per_worker"] == threads


def test_a_method_that_cannot_meet_the_target_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    from segnas.search.strategies.saswot import SasWOT

    def out_of_reach(self, ctx):
        raise TargetOutOfReach("latency.target_ms: 1 ms is out of reach of space 'multires'",
                               "raise the target (--target-ms)", "raise the target in a new comparison")

    monkeypatch.setattr(SasWOT, "prepare", out_of_reach)
    summary, lines = run_compare(tiny(tmp_path / "runs", zoo=[]))
    assert failed_rows(summary) == ["saswot"]
    rows = {r["name"]: r for r in summary["rows"]}
    assert rows["saswot"]["status"].startswith("failed: latency.target_ms") and not rows["saswot"]["seeds"]
    assert rows["saswot"]["status"].endswith("raise the target in a new comparison")  # (no option compare lacks)
    assert rows["saswot"]["val_miou_mean"] is None and rows["saswot"]["latency_ms"] is None
    assert rows["random"]["status"] == "under target (-100%)" and rows["random"]["val_miou_mean"] is not None
    # said when the checks find it, and as its job ends; not a third time
    assert len([x for x in lines if x.startswith("search:saswot: failed: latency.target_ms")]) == 1
    assert not [x for x in lines if x.startswith("saswot: failed")]
    md = (Path(summary["run_dir"]) / "compare.md").read_text()
    assert "| saswot | method | - |" in md and "out of reach" in md


def test_a_comparison_with_a_failed_network_exits_with_status_1(tmp_path, monkeypatch):
    """A script that publishes a comparison's table learns that a row has no result."""
    import segnas.cli.main as cli

    run = tmp_path / "runs" / "x"
    rows = [{"name": "saswot", "status": "failed: latency.target_ms: out of reach"}, {"name": "random", "status": "ok"}]
    monkeypatch.setattr("segnas.jobs.compare.compare_job", lambda *a, **k: {"run_dir": str(run), "rows": rows})
    monkeypatch.setattr("segnas.api.job_settings", lambda *a, **k: None)
    result = CliRunner().invoke(cli.app, ["compare", "--set", "latency.target_ms=5"])
    assert result.exit_code == 1, result.output
    assert f"1 network without a result: saswot (their rows say why; after a fix, segnas compare --resume {run} " \
           "--rerun NAME runs one again)" in " ".join(result.output.split())
    rows[0]["status"] = "under target (-20%)"
    assert CliRunner().invoke(cli.app, ["compare", "--set", "latency.target_ms=5"]).exit_code == 0


def test_a_job_that_breaks_unexpectedly_still_gets_its_end_line(tmp_path, monkeypatch):
    """A method's code that raises fails that method (its row says so, the others go on); a training
    that raises (segnas's own defect) stops the comparison, after its end line."""
    import segnas.jobs.compare as compare
    from segnas.search.strategies.saswot import SasWOT

    def broken(self, ctx):
        raise RuntimeError("a bug in the method")

    monkeypatch.setattr(SasWOT, "run", broken)
    lines: list[str] = []
    summary = compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", zoo=[])), echo=lines.append)
    rows = {r["name"]: r for r in summary["rows"]}
    assert rows["saswot"]["status"] == ("failed: RuntimeError: a bug in the method (raised while the method ran; "
                                        "traceback in search/saswot/error.txt)")
    assert rows["random"]["val_miou_mean"] is not None
    assert any(x.startswith("search:saswot: failed: RuntimeError: a bug in the method") for x in lines)

    def broken_training(*args, **kwargs):
        raise RuntimeError("a bug in the trainer")

    monkeypatch.setattr(compare, "train_job", broken_training)
    lines.clear()
    with pytest.raises(SegnasError, match="train:random:seed0 failed: RuntimeError: a bug in the trainer"):
        compare_job(build_config(CompareSettings, tiny(tmp_path / "again", zoo=[])), echo=lines.append)
    assert "train:random:seed0: failed: RuntimeError: a bug in the trainer" in lines


def test_a_job_that_finds_no_room_to_write_stops_the_comparison_rather_than_failing_its_row(tmp_path, monkeypatch):
    """A full disk is not a network's result: recorded as a failed row, it stayed failed on resume."""
    import segnas.jobs.compare as compare
    from segnas.errors import CannotWrite

    def full(*args, **kwargs):
        raise CannotWrite("best.pt: cannot be written: no space left on the device")

    monkeypatch.setattr(compare, "train_job", full)
    with pytest.raises(CannotWrite, match="train:saswot:seed0 failed: best.pt: cannot be written: no space left"):
        compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", zoo=[])))
    run = next((tmp_path / "runs").iterdir())
    assert not [x for x in (run / "jobs.jsonl").read_text().splitlines() if x.startswith('{"key": "train:')]


def _folder_dataset(root: Path) -> None:
    """A folder dataset with train and val splits only (no test split)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.png")
            Image.fromarray(rng.integers(0, 3, SIZE, dtype=np.uint8)).save(root / "masks" / split / f"{i}.png")
    (root / "dataset.yaml").write_text("classes: [a, b, c]\n")


def test_a_dataset_without_a_test_split_has_no_test_column(tmp_path):
    _folder_dataset(tmp_path / "data")
    data = {"name": "folder", "root": str(tmp_path / "data"), "batch_size": 2, "eval_batch_size": 2}
    summary, lines = run_compare(tiny(tmp_path / "runs", data=data, methods={}))
    assert [x for x in lines if "has no 'test' split" in x] == [
        "data: folder has no 'test' split; the test mIoU column is left out"]  # said once
    assert summary["test_split"] is None and summary["rows"][0]["test_miou_mean"] is None
    md = (Path(summary["run_dir"]) / "compare.md").read_text()
    assert table_head(md) == [h for h in HEAD if h != "test mIoU %"]
    assert "- no 'test' split in folder: test mIoU left out" in md
    assert list(summary["rows"][0]["per_class_iou"]) == ["a", "b", "c"]
    summary, lines = run_compare(tiny(tmp_path / "none", data=data, methods={}, test_split=None))
    assert not any("has no" in x and "split" in x for x in lines), lines
    assert "- no test split scored (test_split: null)" in (Path(summary["run_dir"]) / "compare.md").read_text()
    # a split named by the user (misspelt, say) is refused before any work, not left out
    with pytest.raises(SegnasError, match=r"^test_split: folder has no 'holdot' split .*; name one it has, or "
                                          r"test_split: null for none$"):
        run_compare(tiny(tmp_path / "misspelt", data=data, methods={}, test_split="holdot"))
    assert not (tmp_path / "misspelt").exists()


def test_interleaved_latency_measures_every_network_in_rounds():
    from segnas.cost.latency import LatencyResult, measure_latency_interleaved

    small, large = torch.nn.Conv2d(3, 4, 1), torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1)
                                                                    for _ in range(12)])
    results = measure_latency_interleaved({"small": small, "large": large}, (1, 3, 64, 64), "eager", threads=1,
                                          min_runs=15, min_time_s=0.0)
    assert set(results) == {"small", "large"} and results["small"].runs == results["large"].runs == 15
    assert len(results["small"].round_medians_ms) == 3  # three rounds, each a block of 5 timed runs
    assert results["small"].median_ms < results["large"].median_ms
    # the quietest round: a host that slowed one round does not slow the figure
    slowed = LatencyResult("eager", (1, 3, 64, 64), 15.0, 1.0, 15, 1, round_medians_ms=(11.1, 18.7, 11.3))
    assert slowed.quietest_ms == 11.1 and slowed.to_dict()["quietest_ms"] == 11.1
    assert LatencyResult("eager", (1, 3, 64, 64), 9.0, 1.0, 15, 1).quietest_ms == 9.0  # one round: its median


class _Host:
    """A simulated host whose speed changes: every module sleeps ``cost`` ms, twice that while slow."""

    def __init__(self, slow_for_s: float) -> None:
        self.slow_until = time.perf_counter() + slow_for_s


class _Sleeper(torch.nn.Module):
    def __init__(self, host: _Host, cost_ms: float) -> None:
        super().__init__()
        self.host, self.cost_ms = host, cost_ms

    def forward(self, x):
        slow = time.perf_counter() < self.host.slow_until
        time.sleep(self.cost_ms * (2 if slow else 1) / 1000)
        return x


def test_a_probed_session_takes_every_figure_in_one_state_of_the_host():
    """The host runs everything twice as slow for the session's first 0.4 s (about a quarter of its
    rounds): the probe tells those blocks apart, and the figures are the blocks of the fast state, the
    fastest the host spent a quarter of the session in (a session that never saw the fast state would
    give the slow state's, alike for every network)."""
    from segnas.cost.latency import measure_latency_gated

    host = _Host(slow_for_s=0.4)
    models = {"a": _Sleeper(host, 2.0), "b": _Sleeper(host, 4.0)}
    results = measure_latency_gated(models, (1, 3, 8, 8), _Sleeper(host, 1.0), backend="eager", threads=1,
                                    block_runs=3, block_time_s=0.0, min_rounds=20, max_rounds=60)
    for name, fast in (("a", 2.0), ("b", 4.0)):
        r = results[name]
        assert len(r.round_probe_ms) == len(r.round_medians_ms) >= 2
        assert max(r.round_medians_ms) > 1.6 * fast  # some blocks ran slow
        assert fast <= r.steady_ms < 1.4 * fast, (name, r.steady_ms, r.round_medians_ms, r.round_probe_ms)


def test_pareto_plot_and_front(tmp_path):
    from segnas.report.pareto import pareto_front, plot_pareto

    rows = [{"name": "a", "kind": "method", "latency_ms": 5.0, "val_miou_mean": 0.5, "val_miou_std": 0.01},
            {"name": "b", "kind": "method", "latency_ms": 6.0, "val_miou_mean": 0.4, "val_miou_std": None},
            {"name": "z", "kind": "zoo", "latency_ms": 9.0, "val_miou_mean": 0.6, "val_miou_std": 0.02},
            {"name": "f", "kind": "method", "latency_ms": None, "val_miou_mean": None}]
    assert pareto_front(rows) == ["a", "z"]
    path = plot_pareto(rows, 7.0, tmp_path / "p.png", title="t")
    assert Image.open(path).size[0] > 100


@pytest.fixture
def tiny_demo(monkeypatch):
    """`segnas demo` with a tiny space, few candidates and eager latency: its wiring, in seconds
    (its five-minute budget is benchmarks/demo/demo_time.py's to measure)."""
    import segnas.jobs.demo as demo

    monkeypatch.setattr(demo, "DEMO_SPACE", {"space": "multires", **SPACE})
    monkeypatch.setattr(demo, "DEMO_CANDIDATES", 2)
    monkeypatch.setattr(demo, "TARGET_DRAWS", 6)
    monkeypatch.setattr(demo, "DEMO_LATENCY", {"backend": "eager", "table_min_runs": 1, "table_min_time_s": 0.0})


@pytest.mark.calibration
def test_the_demos_searches_predict_with_the_correction_its_target_was_set_with(tmp_path, tiny_demo, monkeypatch):
    """On a busy host the demo fitted one correction for its target and its searches another (not
    cached): both searches refused the target (cheapest network 16.97 ms, target 10.92 ms)."""
    import segnas.jobs.demo as demo
    from segnas.cost import latency_model

    measured: list[int] = []

    def measure(space, archs, *args, **kwargs):
        measured.append(len(archs))
        return [(1.0 + 0.1 * i) * (len(measured) if len(measured) > 1 else 0.01) for i in range(len(archs))]

    monkeypatch.setattr(latency_model, "measure_networks", measure)
    monkeypatch.setattr(latency_model, "other_processes_cores", lambda: 1.5)  # busy: not cached
    monkeypatch.setattr(demo, "DEMO_LATENCY", {**demo.DEMO_LATENCY, "calibration_networks": 8})
    summary, _ = demo.demo_job(steps=1, size=(32, 48), out_dir=str(tmp_path), threads=1)
    assert measured == [8]  # one fit, for the target and the searches
    assert [r["status"].startswith("failed") for r in summary["rows"]] == [False, False, False]


def test_demo_runs_a_small_comparison(tmp_path, tiny_demo):
    from segnas.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--steps", "2", "--size", "32x48", "--threads", "1",
                                      "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "setting the latency target" in result.output and "sample (image | ground truth | saswot" in result.output
    run = next(tmp_path.iterdir())
    data = json.loads((run / "compare.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["saswot", "random", "fast_scnn"]
    assert data["target_ms"] > 0 and data["train_budget"] == "2 optimizer steps"
    assert all(r["seeds"][0]["steps"] == 2 for r in data["rows"] if r["seeds"])
    assert table_head((run / "compare.md").read_text()) == HEAD
    image = Image.open(run / "sample_prediction.png")
    assert image.size == (48 * (2 + sum(bool(r["seeds"]) for r in data["rows"])), 32)
    assert (run / "pareto.png").is_file()


def test_a_noisy_latency_session_is_flagged_in_the_table(tmp_path, monkeypatch):
    import segnas.jobs.compare as compare
    from segnas.cost import LatencyResult

    def noisy(models, shape, *args, **kwargs):
        return {name: LatencyResult("eager", shape, 2.0, 3.5, 10, 1) for name in models}

    monkeypatch.setattr(compare, "measure_latency_gated", noisy)
    summary, lines = run_compare(tiny(tmp_path / "runs", methods={}))
    md = (Path(summary["run_dir"]) / "compare.md").read_text()
    assert "IQR (3.50 ms) is larger than its median (2.00 ms)" in md and "> **Note:**" in md
    assert any(x.startswith("warning: fast_scnn: the latency measurement is unreliable") for x in lines)


def test_demo_options_are_checked_before_any_work(tmp_path):
    from segnas.cli.main import app

    for args, needle in ((["--minutes", "0"], "--minutes"), (["--steps", "0"], "--steps"),
                         (["--target-ms", "-1"], "--target-ms"), (["--steps", "5", "--minutes", "1"], "not both")):
        result = CliRunner().invoke(app, ["demo", *args, "--out-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and needle in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_a_saved_comparison_resumes_on_another_machine_without_rerunning_ended_jobs(tmp_path):
    """benchmarks/compare/snapshot.py keeps ended jobs without their checkpoints, leaves a job under
    way out, and a run rebuilt from it elsewhere resumes to the same table without running them again."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "compare"))
    import snapshot

    summary, _ = run_compare(tiny(tmp_path / "runs", methods={"random": RANDOM}))
    run = Path(summary["run_dir"])
    assert list(run.rglob("*.pt")), "the trainings wrote no checkpoints: nothing to leave out"
    under_way = run / "train" / "under_way-seed0" / "20260101-000000-train"
    under_way.mkdir(parents=True)
    keys = snapshot.save(run, tmp_path / "kept")
    assert sorted(keys) == ["search:random", "train:fast_scnn:seed0", "train:random:seed0"]
    kept = tmp_path / "kept"
    assert not list(kept.rglob("*.pt")) and not (kept / "train" / "under_way-seed0").exists()
    moved = tmp_path / "elsewhere" / "run"
    shutil.rmtree(run)
    snapshot.restore(kept, moved)
    with pytest.raises(SegnasError, match="already exists"):
        snapshot.restore(kept, moved)
    lines_before = (moved / "jobs.jsonl").read_text()
    resumed = compare_job(None, resume=moved)
    assert (moved / "jobs.jsonl").read_text() == lines_before  # no ended job ran again
    assert _without_timings(resumed["rows"]) == _without_timings(summary["rows"])


def test_a_search_result_recorded_without_its_measured_latency_reads_it_from_the_search_run(tmp_path):
    from segnas.jobs.compare import with_search_measurement

    run = tmp_path / "search" / "m" / "stamp"
    run.mkdir(parents=True)
    (run / "search_result.json").write_text(json.dumps({"networks": {
        "teacher": {"role": "teacher", "measured_ms": None}, "student": {"role": "found", "measured_ms": 18.9}}}))
    old = {"status": "ok", "run_dir": "search/m/stamp", "predicted_ms": 14.8}
    assert with_search_measurement(old, tmp_path)["measured_ms"] == 18.9
    assert with_search_measurement({**old, "measured_ms": 15.0}, tmp_path)["measured_ms"] == 15.0
    assert with_search_measurement({"status": "failed: x"}, tmp_path) == {"status": "failed: x"}


def test_trainings_end_on_one_machine_and_the_latency_session_runs_on_another(tmp_path):
    """measure=False (--no-latency) stops once every job has ended: no latency session and no
    results; a resume (on the deployment machine) measures and writes them without running a job
    again. Every training records where it ran."""
    lines: list[str] = []
    out = compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", methods={"random": RANDOM})),
                      echo=lines.append, measure=False)
    run = Path(out["run_dir"])
    assert out["measured"] is False and out["failed"] == [] and "segnas compare --resume" in lines[-1]
    assert not (run / "latency.json").exists() and not (run / "compare.json").exists()
    from segnas.jobs.compare import compare_status
    from segnas.report.compare_md import status_table

    assert "Every job has ended; the latency session and the results are still to come" in \
        status_table(compare_status(run))
    # while a process runs it (its latency session, here), --status says so rather than how to continue it
    from segnas.engine.rundir import RunDir

    held = RunDir.existing(run)
    assert "Every job has ended; the comparison is measuring the networks" in status_table(compare_status(run))
    del held
    jobs = (run / "jobs.jsonl").read_text()
    (run / "jobs.jsonl").write_text("".join(x + "\n" for x in jobs.splitlines()[:-1]))  # (a training left)
    assert f"No process is running the comparison now: `segnas compare --resume {run}` continues it" in \
        status_table(compare_status(run))
    (run / "jobs.jsonl").write_text(jobs)
    jobs = (run / "jobs.jsonl").read_text()
    trainings = [json.loads(x)["result"] for x in jobs.splitlines() if json.loads(x)["key"].startswith("train:")]
    assert len(trainings) == 2 and {t["device"] for t in trainings} == {"cpu"}
    assert all(t["train_cpu_seconds"] > 0 and t["train_gpu_seconds"] is None for t in trainings)
    summary = compare_job(None, resume=run)
    assert (run / "jobs.jsonl").read_text() == jobs and (run / "latency.json").is_file()
    assert [r["train_devices"] for r in summary["rows"]] == [["cpu"], ["cpu"]]
    assert summary["train_devices"] == ["cpu"] and summary["total_gpu_hours"] == 0.0
    assert "ran on" not in (run / "compare.md").read_text()  # said only where some trained elsewhere
    assert "still to come" not in status_table(compare_status(run))


def test_the_latency_session_can_run_before_the_trainings_end_and_the_results_reuse_it(tmp_path):
    """--measure-now: once every search has ended, the deployment machine measures every network
    while no training has ended (none runs there); run again, it adds a session; the resume that
    writes the results reuses them. Before a search has ended it is one line naming the search."""
    from segnas.jobs.compare import session_ms

    out = compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", methods={"random": RANDOM})),
                      measure=False)
    run = Path(out["run_dir"])
    jobs_path = run / "jobs.jsonl"
    every_job = jobs_path.read_text()
    searches_only = "".join(x + "\n" for x in every_job.splitlines() if json.loads(x)["key"].startswith("search:"))
    jobs_path.write_text("")
    with pytest.raises(SegnasError, match="search of random has not ended"):
        compare_job(None, resume=run, measure_now=True)
    assert not (run / "latency.json").exists()
    jobs_path.write_text(searches_only)
    lines: list[str] = []
    now = compare_job(None, resume=run, measure_now=True, echo=lines.append)
    assert now["latency_measured"] is True and jobs_path.read_text() == searches_only  # no training ran
    session = json.loads((run / "latency.json").read_text())
    assert set(session["networks"]) == {"random", "fast_scnn"} and not (run / "compare.json").exists()
    assert any(line.startswith("random: ") and line.endswith(" ms") for line in "\n".join(lines).splitlines())
    assert any("compare.json, compare.md and the report take it when the comparison next resumes" in line
               for line in lines)
    # again: a second session's rounds join the first's, the quietest of all is the figure
    compare_job(None, resume=run, measure_now=True)
    twice = json.loads((run / "latency.json").read_text())
    assert twice["sessions"] == 2 and jobs_path.read_text() == searches_only
    for name, net in twice["networks"].items():
        first, both = session["networks"][name]["latency"]["round_medians_ms"], net["latency"]["round_medians_ms"]
        # a probed session runs as many rounds as its host needs: the second one's follow the first's
        assert len(both) > len(first) and both[:len(first)] == first
        assert len(net["latency"]["round_probe_ms"]) == len(both) and net["latency"]["quietest_ms"] == min(both)
        assert len(net["latency"]["session_latency_ms"]) == 2
    session = twice
    jobs_path.write_text(every_job)  # the trainings ended elsewhere
    summary = compare_job(None, resume=run)
    assert json.loads((run / "latency.json").read_text()) == session
    assert {r["name"]: r["latency_ms"] for r in summary["rows"]} == {
        n: session_ms(m["latency"]) for n, m in session["networks"].items()}
    # the search run again finds another network under the same name: the saved session is not its
    found = run / next(r["arch_file"] for r in summary["rows"] if r["name"] == "random")
    saved = json.loads(found.read_text())
    space = get_space(saved["space"])
    other = next(a for a in (space.sample(np.random.default_rng(i)) for i in range(50))
                 if arch_key(a) != arch_key(saved["arch"]))
    found.write_text(json.dumps({**saved, "arch": other.to_dict()}))
    compare_job(None, resume=run)
    again = json.loads((run / "latency.json").read_text())
    assert again["sessions"] == 1 and again["identities"]["random"] != session["identities"]["random"]
    assert again["identities"]["fast_scnn"] == "fast_scnn"


def test_sessions_that_disagree_are_said_to():
    """A host that changed speed between two latency sessions (one network 20.1 ms in one, 10.6 in
    the other) gets a note; sessions within 15% of each other none. Probed sessions add up over the
    rounds of the reference probe over every network and session, one state of the host for all."""
    from segnas.jobs.compare import add_session, session_spread_warning

    def session(*rounds: float, probes: tuple[float, ...] = ()) -> dict:
        return {"median_ms": sorted(rounds)[len(rounds) // 2], "round_medians_ms": list(rounds),
                "quietest_ms": min(rounds), "round_probe_ms": list(probes)}

    changed = add_session({"a": session(20.9, 20.4, 20.1)}, {"a": session(10.6, 19.5)})["a"]
    assert changed["quietest_ms"] == 10.6 and changed["session_latency_ms"] == [20.1, 10.6]
    assert changed["steady_ms"] is None  # unprobed: the quietest round is the figure
    assert "differed by 90% between 2 latency sessions (20.10, 10.60 ms)" in session_spread_warning(changed)
    steady = add_session(add_session({"a": session(10.2, 11.0)}, {"a": session(10.6, 10.9)}), {"a": session(11.4)})["a"]
    assert steady["session_latency_ms"] == [10.2, 10.6, 11.4] and session_spread_warning(steady) is None
    assert session_spread_warning(session(10.0, 30.0)) is None  # one session: rounds may differ
    # probed: network b's own fastest probe (15) was the slow state; a's rounds show the fast one (9)
    probed = add_session({"a": session(20.0, 21.0, probes=(15.0, 15.2)), "b": session(30.0, 31.0, probes=(15.1, 15.0))},
                         {"a": session(10.0, 10.4, probes=(9.0, 9.1)), "b": session(29.0, probes=(14.9,))})
    assert probed["a"]["steady_ms"] == 10.2 and probed["b"]["steady_ms"] is None


def test_the_latency_session_runs_on_the_machine_the_searches_targeted(tmp_path):
    """Every search records the machine its latency figures hold for; a latency session elsewhere
    is one line naming both machines (--any-machine measures anyway), and latency.json and
    compare.md say where the session ran."""
    from segnas.cost.machine import machine_record

    out = compare_job(build_config(CompareSettings, tiny(tmp_path / "runs", methods={"random": RANDOM})),
                      measure=False)
    run = Path(out["run_dir"])
    jobs_path = run / "jobs.jsonl"
    records = [json.loads(x) for x in jobs_path.read_text().splitlines()]
    search = next(r["result"] for r in records if r["key"] == "search:random")
    assert search["machine"] == machine_record()
    search["machine"] = {"cpu": "Another CPU", "cores": 64, "fingerprint": "0123456789ab"}
    jobs_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(SegnasError, match=r"random searched for .* on Another CPU \(64 cores\); this machine is"):
        compare_job(None, resume=run)
    assert not (run / "latency.json").exists() and not (run / "compare.json").exists()
    summary = compare_job(None, resume=run, any_machine=True)
    assert json.loads((run / "latency.json").read_text())["machine"] == machine_record() == summary["latency_machine"]
    assert f"on {machine_record()['cpu']} (" in (run / "compare.md").read_text()
    # a session of another machine does not add up with this one's: replaced, and said
    saved = json.loads((run / "latency.json").read_text())
    saved["machine"]["fingerprint"] = "elsewhere000"
    (run / "latency.json").write_text(json.dumps(saved))
    lines: list[str] = []
    compare_job(None, resume=run, measure_now=True, any_machine=True, echo=lines.append)
    assert json.loads((run / "latency.json").read_text())["sessions"] == 1
    assert any("this session replaces it" in line for line in lines)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_one_line_before_any_work(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(SegnasError, match="no CUDA GPU"):
        compare_job(build_config(CompareSettings, tiny(runs, methods={"random": RANDOM})), device="cuda", measure=False)
    assert not runs.exists() or not any(runs.iterdir())


def test_a_found_network_timed_on_a_busy_machine_at_search_is_judged_on_the_session():
    """The end-of-search measurement decides on target, unless other processes kept the cores busy
    around it: then the interleaved session does (a search measured during a test run read +16%)."""
    from segnas.jobs.compare import make_row

    session = {"latency": {"median_ms": 14.0, "iqr_ms": 0.2}, "params": 1, "gflops": 1.0}
    seeds = [{"seed": 0, "status": "ok", "val_miou": 0.5, "per_class_iou": {"a": 0.5}, "train_cpu_seconds": 1.0}]

    def row(busy):
        searched = {"status": "ok", "method": "saswot", "arch_file": "a.json", "measured_ms": 17.5,
                    "measured_other_cores": busy, "search_cpu_seconds": 1.0}
        return make_row("saswot", "method", searched, seeds, session, 15.0)

    assert row(None)["status"] == "over target (+17%)" and row(0.1)["on_target"] is False
    busy = row(1.2)
    assert busy["on_target"] is True and busy["status"] == "ok" and busy["search_measured_other_cores"] == 1.2


def test_the_final_training_keeps_the_recipes_augmentation_under_the_data_settings_given(tmp_path):
    """``train.recipe``'s data section (augmentation) reaches every final training, under the data
    settings the comparison gives; a run field in it is refused before any work."""
    from segnas.jobs.compare import train_config

    cfg = build_config(CompareSettings, tiny(tmp_path, train={"steps": 2, "seeds": 1, "recipe": {
        "data": {"blur_prob": 0.3, "batch_size": 16}, "loss": {"label_smoothing": 0.1}}}))
    trained = train_config(cfg, "fast_scnn", {"name": "fast_scnn"}, 0, tmp_path)
    assert trained.data.blur_prob == 0.3 and trained.loss.label_smoothing == 0.1 and trained.loss.kind == "ohem"
    assert trained.data.batch_size == 2  # the comparison's data settings win
    assert trained.data.options == {"size": SIZE, "length": 4} and trained.max_steps == 2
    with pytest.raises(SegnasError, match="train.recipe: max_steps is not a recipe setting"):
        build_config(CompareSettings, tiny(tmp_path, train={"steps": 2, "recipe": {"max_steps": 5}}))


def test_a_job_under_way_continues_with_the_comparisons_settings_of_where_it_computes(tmp_path, monkeypatch):
    """A comparison resumed with ``--set data.root=...`` (its data moved) continues a search that was
    cut with the comparison's settings of where it computes (``RESUMABLE``) and the search's own
    other settings; config.yaml keeps them once the job's checks pass."""
    import segnas.jobs.compare as compare
    from segnas.config.io import read_yaml, save_config
    from segnas.jobs.search import make_settings, settings_class
    from segnas.training import open_run, start_job

    started = tmp_path / "search" / "random" / "20260101-000000-search"
    started.mkdir(parents=True)
    before = make_settings("random", {"data": {"name": "synthetic", "root": str(tmp_path / "old")}, "threads": 1,
                                      "latency": {"target_ms": 5.0}, "random": {"candidates": 4}})
    save_config(before, started / "config.yaml")
    now = {"data": {"name": "synthetic", "root": str(tmp_path / "moved")}, "threads": 2, "latency": {"target_ms": 5.0},
           "random": {"candidates": 99}}
    seen = {}

    def search_job(settings, resume=None, **_):
        cfg, run = start_job(settings_class("random"), settings, resume, "search")
        seen.update(cfg=cfg, run=run)
        raise SegnasError("stop here")

    monkeypatch.setattr(compare, "search_job", search_job)
    item = {"method": "random", "folder": str(started.parent), "root": str(tmp_path), "settings": now}
    assert compare.run_search(item) == {"status": "failed: stop here"}
    cfg = seen["cfg"]
    assert cfg.data.root == str(tmp_path / "moved") and cfg.threads == 2 and cfg.random.candidates == 4
    assert cfg.latency.threads == 1  # its latency figures stay at the threads they were measured with
    assert read_yaml(started / "config.yaml")["data"]["root"] == str(tmp_path / "old")  # not yet: no check passed
    open_run(cfg, seen["run"])
    saved = read_yaml(started / "config.yaml")
    assert saved["data"]["root"] == str(tmp_path / "moved") and saved["random"]["candidates"] == 4
    assert "resumed with data.root=" in (started / "log.txt").read_text()


def test_a_setting_a_method_would_not_use_is_refused_when_a_comparison_starts_not_when_it_resumes(tmp_path):
    from segnas.errors import SegnasError
    from segnas.jobs.compare import search_settings

    cfg = build_config(CompareSettings, tiny(tmp_path))
    with pytest.raises(SegnasError, match=r"methods.fasterseg: workers \(--workers\): not used by segnas search"):
        search_settings(cfg, "fasterseg", {"workers": 2}, tmp_path, new=True)
    assert search_settings(cfg, "fasterseg", {"workers": 2}, tmp_path).workers == 2  # one under way resumes
    with pytest.raises(SegnasError, match="inherit_weights: a comparison trains every network from scratch"):
        search_settings(cfg, "supernet", {"supernet": {"inherit_weights": True}}, tmp_path, new=True)


def test_a_methods_files_are_kept_absolute_so_a_comparison_resumes_from_any_folder(tmp_path, monkeypatch):
    from segnas.config.io import read_yaml
    from segnas.proxies.discovery import DiscoveredProxy

    monkeypatch.chdir(tmp_path)
    DiscoveredProxy.from_expression("layer_sum(mean_w(abs_w(W)))").save(tmp_path / "p.json")
    random = {"random": {**RANDOM["random"], "evaluator": {"proxy": {**SCORING, "proxy": "p.json"}}}}
    summary, _ = run_compare(tiny(tmp_path / "runs", methods={"random": random}, zoo=[]))
    saved = read_yaml(Path(summary["run_dir"]) / "config.yaml")
    assert saved["methods"]["random"]["random"]["evaluator"]["proxy"]["proxy"] == str(tmp_path / "p.json")
    assert saved["methods"]["random"]["random"]["candidates"] == 2  # (the rest as given)


def test_compare_md_says_when_no_latency_session_ran():
    from segnas.report.compare_md import compare_table

    summary = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "compare" / "results" /
                          "compare_camvid.json").read_text())
    assert "rounds in all" in compare_table(summary)
    md = compare_table({**summary, "latency_sessions": 0, "latency_machine": None, "latency_rounds": None})
    assert "latency: no session ran (no network was trained);" in md and "rounds in all" not in md


def test_a_diverged_training_names_the_comparisons_recipe_setting(tmp_path, monkeypatch):
    import segnas.jobs.compare as compare_jobs
    from segnas.errors import TrainingDiverged

    def diverges(cfg, resume=None):
        raise TrainingDiverged("optim.lr: the loss became nan at step 3; lower the learning rate (now 1e+06)")

    monkeypatch.setattr(compare_jobs, "train_job", diverges)
    summary, _ = run_compare(tiny(tmp_path / "runs", methods={}))
    (status,) = {s["status"] for s in summary["rows"][0]["seeds"]}
    assert status.startswith("failed: train.recipe.optim.lr: the loss became nan at step 3") and \
        "start a new one with the recipe changed" in status


def test_an_error_in_a_methods_code_fails_that_method_alone_with_its_traceback_kept(tmp_path, monkeypatch):
    """A method whose code raises (a plugin's with a bug, say) is a failed result, as a refused target
    is: the comparison's other methods go on; the traceback is kept beside its search."""
    import segnas.jobs.compare as compare

    def search_job(settings, resume=None, **_):
        raise TypeError("Hill.tell() takes 1 positional argument but 2 were given\nmore")

    monkeypatch.setattr(compare, "search_job", search_job)
    item = {"method": "random", "folder": str(tmp_path / "search" / "hill"), "root": str(tmp_path),
            "settings": {"latency": {"target_ms": 5.0}}}
    status = compare.run_search(item)["status"]
    assert status == ("failed: TypeError: Hill.tell() takes 1 positional argument but 2 were given (raised while "
                      "the method ran; traceback in search/hill/error.txt)")
    assert "in search_job" in (tmp_path / "search" / "hill" / "error.txt").read_text()

    def disk_full(settings, resume=None, **_):  # the machine's failure: the comparison stops (a resume retries)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compare, "search_job", disk_full)
    with pytest.raises(OSError, match="No space left"):
        compare.run_search(item)


@pytest.mark.calibration
def test_every_method_of_a_comparison_predicts_with_one_correction_fitted_on_a_busy_host(tmp_path, monkeypatch):
    """On a busy host a correction is not cached: each method's check and each search job fitted its
    own (four calibrations for two methods of one space, the same network predicted 6.18 and 5.99 ms).
    Now the checks fit one per space for every method, and the jobs hold it (``latency_setup.json``)."""
    from segnas.cost import latency_model

    measured: list[int] = []

    def measure(space, archs, *args, **kwargs):
        measured.append(len(archs))
        return [1.0 + 0.1 * i for i in range(len(archs))]

    monkeypatch.setattr(latency_model, "measure_networks", measure)
    monkeypatch.setattr(latency_model, "other_processes_cores", lambda: 1.5)  # busy: not cached
    cfg = tiny(tmp_path / "runs", latency={**tiny(tmp_path)["latency"], "calibration_networks": 8})
    summary, lines = run_compare(cfg)
    run = Path(summary["run_dir"])
    assert measured == [8], lines  # one calibration, in the checks
    setup = json.loads((run / "latency_setup.json").read_text())
    assert len(setup["corrections"]) == 1 and setup["cpu_seconds"] > 0
    assert summary["latency_setup_cpu_hours"] > 0
    assert "the checks before the searches" in (run / "compare.md").read_text()
    predicted = {r["name"]: r["predicted_ms"] for r in summary["rows"] if r["kind"] == "method"}
    jobs = {json.loads(x)["key"]: json.loads(x)["result"] for x in (run / "jobs.jsonl").read_text().splitlines()}
    assert all(jobs[f"search:{m}"]["predicted_ms"] != jobs[f"search:{m}"]["predicted_table_ms"] for m in predicted)


def test_a_found_networks_search_and_session_figures_far_apart_are_noted():
    """One network, one session: 10.90 ms at its search (on target) and 7.48 in the session (under it)
    gave two verdicts with nothing said; a busy search measurement is noted as before."""
    from segnas.jobs.compare import search_measurement_notes

    row = {"name": "random", "search_measured_ms": 10.90, "latency_ms": 7.48, "search_measured_other_cores": None}
    (note,) = search_measurement_notes(row)
    assert "random: measured at the end of its search at 10.90 ms, +46% from the session's 7.48 ms" in note
    assert search_measurement_notes({**row, "search_measured_ms": 8.0}) == []
    assert search_measurement_notes({**row, "latency_ms": None}) == []
    (busy,) = search_measurement_notes({**row, "search_measured_other_cores": 1.5})
    assert "while other processes kept 1.5 cores busy" in busy


def test_a_search_stopped_by_the_time_limit_is_noted(tmp_path):
    """What a search capped by time finds depends on the machine's speed and load: a rerun with the
    same seed found another network, with nothing said."""
    many = {"random": {**RANDOM["random"], "candidates": 100000}}
    summary, lines = run_compare(tiny(tmp_path / "runs", methods={"random": many}, zoo=[], search_cpu_minutes=0.01))
    (note,) = [n for n in summary["notes"] if "time limit" in n]
    assert note.startswith("random: its search reached the time limit (search_cpu_minutes 0.01) after ")
    assert f"warning: {note}" in lines


def test_methods_that_found_the_same_network_are_named_together():
    """Two methods returning one network got other latencies and statuses from measurement noise,
    with nothing saying they were the same network."""
    from segnas.jobs.compare import same_network_notes

    arch = {"space": "mobile", "version": 1, "arch": {"stages": [1, 2]}, "method": "saswot"}
    rows = [{"name": "saswot", "arch": arch}, {"name": "random", "arch": {**arch, "method": "random"}},
            {"name": "gas", "arch": {**arch, "arch": {"stages": [2, 2]}}}, {"name": "fast_scnn", "arch": None}]
    assert same_network_notes(rows) == ["saswot and random found the same network: their latencies differ by "
                                        "measurement alone, their scores by training alone"]
