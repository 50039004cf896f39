"""Search jobs: run a strategy in a run directory, then report the found networks."""

from __future__ import annotations

import json
from pathlib import Path
import time
from typing import Any, Callable

from segnas.config.search import SearchConfig, SSRConfig
from segnas.cost import count_flops, count_parameters, measure_latency
from segnas.jobs.common import open_run, start_job
from segnas.jobs.train import train_job
from segnas.utils import atomic_write_text


def fasterseg_job(cfg: SearchConfig | None, resume: str | Path | None = None,
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search → derive → (train teacher → train student with KD) → measure; returns the summary
    also written to ``search_result.json``. ``resume`` continues a killed job at any stage."""
    from segnas.search.fasterseg import FasterSegSearch
    from segnas.spaces.multires import MULTIRES

    echo = echo or (lambda m: None)
    cfg, run = start_job(SearchConfig, cfg, resume)
    job = FasterSegSearch(cfg, echo)  # validates data and settings before anything is written
    job.run = open_run(cfg, run)
    t0 = time.perf_counter()
    teacher, student = job.search()
    search_s = searched_seconds(job.run.path, time.perf_counter() - t0)
    found = measure_found(MULTIRES.build(student, job.num_classes), job.size, cfg)
    summary: dict[str, Any] = {
        "search_seconds": round(search_s, 1), **{k: found.pop(k) for k in ("size", "backend", "target_ms")},
        **{f"student_{k}": v for k, v in found.items()},
        "teacher_params": count_parameters(MULTIRES.build(teacher, job.num_classes)),
    }
    echo(f"student: {summary['student_measured_ms']:.2f} ms measured vs target {cfg.latency.target:.2f} ms "
         f"({100 * summary['student_latency_vs_target']:+.1f}%)")
    if cfg.final_epochs > 0:
        summary["training"] = train_final(job, echo)
    atomic_write_text(job.run.path / "search_result.json", json.dumps(summary, indent=2))
    summary["run_dir"] = str(job.run.path)
    return summary


def train_final(job, echo: Callable[[str], None]) -> dict[str, Any]:
    """Train the derived teacher, then the student distilled from it; each stage is skipped when
    its summary exists and resumed when its run directory exists."""
    results: dict[str, Any] = {}
    teacher_ckpt = None
    for name in ("teacher", "student"):
        results[name] = train_stage(job.run.path, name, job.final_config(name, teacher_ckpt), echo)
        teacher_ckpt = Path(results["teacher"]["run_dir"]) / "checkpoints" / "best.pt"
    return results


def ssr_job(cfg: SSRConfig | None, resume: str | Path | None = None,
            echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """SSR search (with shrinking) → derive → (train) → measure; returns the summary also written to
    ``search_result.json``. ``resume`` continues a killed job at any stage."""
    from segnas.search.ssr import SSRSearch
    from segnas.spaces.joint import JOINT

    echo = echo or (lambda m: None)
    cfg, run = start_job(SSRConfig, cfg, resume)
    job = SSRSearch(cfg, echo)
    job.run = open_run(cfg, run)
    t0 = time.perf_counter()
    arch = job.search()
    search_s = searched_seconds(job.run.path, time.perf_counter() - t0)
    summary = {"search_seconds": round(search_s, 1), "converged": job.supernet.is_single(),
               **measure_found(JOINT.build(arch, job.num_classes), job.size, cfg)}
    echo(f"found network: {summary['measured_ms']:.2f} ms measured vs target {cfg.latency.target:.2f} ms "
         f"({100 * summary['latency_vs_target']:+.1f}%)")
    if cfg.final_epochs > 0:
        summary["training"] = train_stage(job.run.path, "arch", job.final_config(), echo)
    atomic_write_text(job.run.path / "search_result.json", json.dumps(summary, indent=2))
    summary["run_dir"] = str(job.run.path)
    return summary


def searched_seconds(run_path: Path, seconds: float) -> float:
    """Search time to report: a job that had already finished (its ``search_result.json`` exists,
    e.g. resumed to train with another budget) keeps the time its search took then."""
    done = run_path / "search_result.json"
    return float(json.loads(done.read_text())["search_seconds"]) if done.is_file() else seconds


def measure_found(net, size: tuple[int, int], cfg) -> dict[str, Any]:
    """Measured latency (vs the target), parameters and GFLOPs of a found network."""
    net = net.eval()
    measured = measure_latency(net, (1, 3, *size), cfg.latency.backend, cfg.latency.threads or cfg.threads,
                               min_time_s=3.0)
    return {"size": list(size), "backend": cfg.latency.backend, "target_ms": cfg.latency.target,
            "measured_ms": measured.median_ms, "latency_vs_target": measured.median_ms / cfg.latency.target - 1.0,
            "params": count_parameters(net), "gflops": count_flops(net, (1, 3, *size)).gflops}


def train_stage(run_path: Path, name: str, train_cfg, echo: Callable[[str], None]) -> dict[str, Any]:
    """Train one found network; skipped when its summary exists, resumed when its run directory does."""
    done = run_path / f"{name}_train.json"
    if done.is_file():
        return json.loads(done.read_text())
    existing = sorted(p.parent for p in (run_path / "train").glob(f"*-{train_cfg.job}/config.yaml"))
    r = train_job(train_cfg, resume=existing[-1] if existing else None, echo=echo)
    result = {"run_dir": r.run_dir, "best_val_miou": r.best_miou, "final": r.final}
    atomic_write_text(done, json.dumps(result, indent=2))
    return result
