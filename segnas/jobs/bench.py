"""Benchmark and export jobs: parameters, FLOPs, latency per backend, efficiency, ONNX/TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from segnas.cost import check_parity, count_flops, count_parameters, export_onnx, export_torchscript, measure_latency
from segnas.cost.latency import default_threads
from segnas.cost.machine import matmul_peak_gflops
from segnas.errors import SegnasError
from segnas.training.models import resolve_model


def bench_job(sources: Sequence[str], size: tuple[int, int], backends: Sequence[str], threads: int | None = None,
              num_classes: int = 19, device: str = "cpu", min_time_s: float = 2.0,
              echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per (network, backend): params, GFLOPs/GMACs, median/IQR latency, FPS, achieved
    GFLOP/s and its fraction of this machine's fp32 matmul peak."""
    threads = threads or default_threads()
    peak = matmul_peak_gflops(threads)
    shape = (1, 3, *size)
    rows = []
    for source in sources:
        model, name = resolve_model(source, num_classes)
        params = count_parameters(model)
        flops = count_flops(model, shape)
        for backend in backends:
            lat = measure_latency(model, shape, backend, threads, device, min_time_s=min_time_s)
            achieved = flops.gflops / (lat.median_ms / 1000.0)
            row = {"model": name, "backend": backend, "size": f"{size[0]}x{size[1]}", "threads": threads,
                   "params_m": params / 1e6, "gflops": flops.gflops, "gmacs": flops.gmacs,
                   "median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms, "fps": lat.fps, "runs": lat.runs,
                   "achieved_gflops_s": achieved, "peak_gflops_s": peak, "fraction_of_peak": achieved / peak}
            rows.append(row)
            if echo:
                echo(f"{name:>16s} {backend:>12s} {lat.median_ms:8.2f} ms  {lat.fps:7.1f} FPS  "
                     f"{flops.gflops:6.2f} GFLOPs  {100 * achieved / peak:5.1f}% of peak")
    return rows


def export_job(source: str, out: str | Path, size: tuple[int, int], fmt: str = "onnx", dynamic: bool = False,
               num_classes: int = 19, tolerance: float = 1e-3) -> tuple[Path, list]:
    """Export a network and check parity with PyTorch at ``size`` (and a second size when dynamic).
    A file that fails the parity check is removed, never left behind as if it were good."""
    model, _ = resolve_model(source, num_classes)
    shape = (1, 3, *size)
    out = Path(out)
    if fmt == "onnx":
        export_onnx(model, out, shape, dynamic=dynamic)
    elif fmt == "torchscript":
        if dynamic:
            raise SegnasError("--dynamic: TorchScript traces one input size; use --format onnx")
        export_torchscript(model, out, shape)
    else:
        raise SegnasError(f"--format: expected onnx or torchscript, got {fmt!r}")
    shapes = [shape] + ([(2, 3, size[0] + 13, size[1] + 29)] if dynamic else [])
    try:
        results = [check_parity(model, out, s, tolerance) for s in shapes]
    except Exception:
        out.unlink(missing_ok=True)  # an unverified export is not left behind
        raise
    bad = [r for r in results if not r.ok]
    if bad:
        out.unlink(missing_ok=True)
        r = bad[0]
        raise SegnasError(f"{out}: parity check failed at input {r.input_shape}: max |diff| {r.max_abs_diff:.3g} "
                          f"> tolerance {tolerance:g}; file removed")
    return out, results
