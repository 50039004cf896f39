"""Helpers shared by the benchmark scripts: data location, machine facts, result files.

Each study lives in ``benchmarks/<study>/`` (its scripts, ``results/`` and a generated README;
``benchmarks/studies.yaml`` lists them). Scripts import each other by module name
(``from train_camvid import config``) wherever their study keeps them: importing this module puts
every study folder on the import path.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from segnas.cost.machine import cpu_model
from segnas.utils import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.extend(str(d) for d in sorted(BENCHMARKS.iterdir()) if d.is_dir() and any(d.glob("*.py"))
                and str(d) not in sys.path)


def results_dir(script: str | Path) -> Path:
    """The ``results/`` folder of the study that holds ``script`` (pass ``__file__``)."""
    return Path(script).resolve().parent / "results"


def camvid_root() -> Path:
    """CamVid folder: $SEGNAS_CAMVID, else ../shared/data/camvid beside the project root."""
    return Path(os.environ.get("SEGNAS_CAMVID", ROOT.parent / "shared" / "data" / "camvid"))


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (for result files)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def latest_run(out_dir: str | Path, job: str) -> Path | None:
    """The newest run directory of ``job`` under ``out_dir`` (``<timestamp>-<job>``), if any."""
    runs = sorted(p for p in Path(out_dir).glob(f"*-{job}") if (p / "config.yaml").is_file())
    return runs[-1] if runs else None


def resumed_search(settings: Any, latency: Any = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The summary of the search job ``settings`` describes: the newest run of its job under its
    ``out_dir`` read back when it finished with the same settings, continued when it was cut; else a
    new search. (A time-limited search done again finds another winner, so a study that trained the
    first one must not search again.)"""
    from segnas.config.io import load_config, saved_form
    from segnas.jobs.search import search_job

    earlier = latest_run(settings.out_dir, settings.job)
    if earlier is not None:
        before = load_config(type(settings), earlier / "config.yaml")
        if saved_form(before) != saved_form(settings):
            earlier = None  # another study's search (other settings): not this one's
    if earlier is not None and (earlier / "search_result.json").is_file():
        echo(f"{settings.method}: reading back {earlier}")
        return {**json.loads((earlier / "search_result.json").read_text()), "run_dir": str(earlier)}
    if earlier is not None:
        echo(f"{settings.method}: resuming {earlier}")
        return search_job(None, resume=earlier, latency=latency, echo=echo)
    return search_job(settings, latency=latency, echo=echo)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically (never a half-written plot), then close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    plt.close(fig)


def save_result(name: str, result: dict[str, Any], results_dir: str | Path) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically with the machine facts, a timestamp and the
    command that produced it, ``produced_by`` (a result that carries its own, one rewritten later
    by a re-timing option, keeps it); a study's script passes its own ``results_dir(__file__)`` (or
    its ``--results-dir``)."""
    path = Path(results_dir) / f"{name}.json"
    command = shlex.join(["python", relative(sys.argv[0]), *sys.argv[1:]])
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "produced_by": command, **result}
    atomic_write_text(path, json.dumps(payload, indent=2))
    return path


def baselines(minutes: float, cpu: str) -> dict:
    """Zoo networks trained by train_camvid.py for ``minutes`` CPU-minutes on CPU ``cpu`` (a CPU-time
    budget buys different training on another CPU), by model: val mIoU, parameters and latency
    measured on that CPU (``train_camvid.py --time-only``, else the zoo study's when it ran there)."""
    zoo_file = BENCHMARKS / "zoo_latency" / "results" / "main.json"
    zoo = json.loads(zoo_file.read_text()) if zoo_file.is_file() else {}
    zoo_rows = {row["model"]: row for row in zoo.get("rows", [])
                if row.get("size") == "360x480" and row.get("backend") == "onnxruntime"}
    same_cpu = zoo.get("machine", {}).get("cpu") == cpu
    out = {}
    for f in sorted((BENCHMARKS / "training" / "results").glob("*.json")):
        r = json.loads(f.read_text())
        if "train_minutes" not in r:  # not a training run (the training-step timing)
            continue
        if abs(r["train_minutes"] - minutes) <= 0.05 * minutes and r["machine"]["cpu"] == cpu:
            m = r.get("model", "fast_scnn")
            row = zoo_rows.get(m, {})
            out[m] = {"val_miou": r["final_val_miou"], "train_minutes": r["train_minutes"],
                      "budget": f"{r['train_minutes']:.1f} CPU-minutes",
                      "latency_ms": r.get("latency_ms", row.get("median_ms") if same_cpu else None),
                      "params": row["params_m"] * 1e6 if "params_m" in row else None}
    return out


def steps_baselines(steps: int) -> dict:
    """Networks ``train_camvid.py --steps`` trained for ``steps`` optimizer steps, by model: val mIoU
    (mean over training seeds), parameters and, where timed, latency (the equal-steps timing session)."""
    folder = BENCHMARKS / "training" / "results"
    timing_file = folder / f"timing_steps{steps}.json"
    timed = json.loads(timing_file.read_text())["networks"] if timing_file.is_file() else []
    timing = {n["name"]: n["median_ms"] for n in timed if n.get("study") == "training"}
    out = {}
    for f in sorted(folder.glob(f"*_steps{steps}.json")):
        r = json.loads(f.read_text())
        if "val_miou_mean" in r:
            name = f.name[:-len(f"_steps{steps}.json")]
            out[name] = {"val_miou": r["val_miou_mean"], "budget": f"{steps} steps x {len(r['training'])} seeds",
                         "latency_ms": timing.get(name), "params": r.get("params")}
    return out


def interleaved_rounds(models: list[Any], shape: tuple[int, int, int, int], backend: str, threads: int,
                       rounds: int) -> list[list[float]]:
    """Per round, the median latency (ms) of every model: one interleaved session
    (``segnas.cost.latency.measure_latency_interleaved``), each round a block of ≥ 10 runs and ≥ 1 s
    per model after 3 warm-up runs."""
    from segnas.cost.latency import measure_latency_interleaved

    named = {str(i): m for i, m in enumerate(models)}
    results = measure_latency_interleaved(named, shape, backend, threads, warmup=3, min_runs=10 * rounds,
                                          min_time_s=1.0 * rounds, rounds=rounds)
    return [[results[name].round_medians_ms[r] for name in named] for r in range(rounds)]
