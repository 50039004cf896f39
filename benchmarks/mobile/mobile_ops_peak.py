"""How close to the matmul peak ONNX Runtime runs the ``mobile`` space's operators on this CPU.

    python benchmarks/mobile/mobile_ops_peak.py [--threads 2] [--min-time 1.0] [--quick]

Every operator is the space's own (``OpKey.build()``, the module the latency table measures), at the
shapes Fast-SCNN gives it at 360x480: the stem, the inverted-residual blocks (kernel 3 and 5,
dilation 1 and 2, strided and not) and their depthwise and pointwise parts, pyramid pooling,
fusion, classifier, upsampling. Each is exported and timed on ONNX Runtime with ``--threads``; its
FLOP rate (``segnas.cost.count_flops``: 2 per multiply-add) is divided by the fastest of four GEMMs
(matrix products and 1×1 convolutions of two sizes) timed the same way: the peak that GEMM-bound
operators could reach (all four are timed again at the end, to show the drift). Depthwise
convolutions and pooling do little arithmetic per byte, so they sit far below the peak on any CPU;
what matters for the space is that no choice falls off a cliff (e.g. dilated or 5x5 depthwise
convolutions several times slower than 3x3 per FLOP). Timings on a shared, busy machine
are indicative only. Saves results/mobile_ops_peak.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

from segnas.cost import count_flops, measure_latency  # noqa: E402
from segnas.nn.ops import OpKey  # noqa: E402


class MatMul(nn.Module):
    """x @ W for a (1, 1, n, n) input: the GEMM reference."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n) / n ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def op(name: str, cin: int, cout: int, h: int, w: int, stride: int = 1, dilation: int = 1, **extra) -> OpKey:
    return OpKey(name, cin, cout, h, w, stride, dilation, tuple(sorted(extra.items())))


#: (kind, key): Fast-SCNN's shapes at 360x480 (1/2: 180x240, 1/4: 90x120, 1/8: 45x60, 1/16: 23x30,
#: 1/32: 12x15), and the space's other choices at the same places.
CASES: list[tuple[str, OpKey]] = [
    ("stem conv 3x3 s2 (3->32)", op("conv_bn_relu", 3, 32, 360, 480, 2)),
    ("stem dsconv s2 (32->48)", op("sep_conv", 32, 48, 180, 240, 2)),
    ("stem conv 3x3 s2 (32->48)", op("conv_bn_relu", 32, 48, 180, 240, 2)),
    ("pointwise 1x1 (64->384) @1/16", op("conv_bn", 64, 384, 23, 30, kernel=1)),
    ("pointwise 1x1 (384->64) @1/16", op("conv_bn", 384, 64, 23, 30, kernel=1)),
    ("depthwise 3x3 (384) @1/16", op("dw_conv", 384, 384, 23, 30, kernel=3)),
    ("depthwise 5x5 (384) @1/16", op("dw_conv", 384, 384, 23, 30, kernel=5)),
    ("depthwise 3x3 dil 2 (384) @1/16", op("dw_conv", 384, 384, 23, 30, 1, 2, kernel=3)),
    ("IR t6 k3 s2 (64->64) 1/8->1/16", op("inverted_residual", 64, 64, 45, 60, 2, expansion=6, kernel=3)),
    ("IR t6 k3 (64) @1/16", op("inverted_residual", 64, 64, 23, 30, expansion=6, kernel=3)),
    ("IR t6 k5 (64) @1/16", op("inverted_residual", 64, 64, 23, 30, expansion=6, kernel=5)),
    ("IR t6 k3 dil 2 (64) @1/16", op("inverted_residual", 64, 64, 23, 30, 1, 2, expansion=6, kernel=3)),
    ("IR t2 k3 (64) @1/16", op("inverted_residual", 64, 64, 23, 30, expansion=2, kernel=3)),
    ("IR t6 k3 (128) @1/32", op("inverted_residual", 128, 128, 12, 15, expansion=6, kernel=3)),
    ("IR t6 k3 (48) @1/8", op("inverted_residual", 48, 48, 45, 60, expansion=6, kernel=3)),
    ("pyramid pooling (128) @1/32", op("pyramid_pooling", 128, 128, 12, 15)),
    ("fusion depthwise 3x3 (128) @1/8", op("dw_conv", 128, 128, 45, 60, kernel=3)),
    ("fusion 1x1 (128->128) @1/8", op("conv_bn", 128, 128, 45, 60, kernel=1)),
    ("head dsconv (128) @1/8", op("sep_conv", 128, 128, 45, 60)),
    ("classifier 1x1 (128->11) @1/8", op("classifier", 128, 11, 45, 60)),
    ("upsample x4 (128) 1/32->1/8", op("upsample", 128, 128, 12, 15, factor=4, align_corners=False)),
]


def rate(model: nn.Module, shape: tuple[int, ...], threads: int, min_time: float) -> tuple[float, float, float]:
    """(ms, GFLOPs, GFLOP/s) of ``model`` on ONNX Runtime: the faster of two timings (medians), so
    that a burst of load from other processes during one of them does not count."""
    ms = min(measure_latency(model.eval(), shape, "onnxruntime", threads, min_time_s=min_time).median_ms
             for _ in range(2))
    gflops = count_flops(model, shape).gflops
    return ms, gflops, gflops / (ms / 1e3) if ms > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per operator")
    ap.add_argument("--quick", action="store_true", help="a few operators, short timings: checks the script")
    ap.add_argument("--results-dir", default=str(results_dir(__file__)))
    args = ap.parse_args()
    cases = CASES[::5] if args.quick else CASES
    min_time = 0.05 if args.quick else args.min_time
    torch.manual_seed(0)
    n = 256 if args.quick else 1024
    references = {f"matmul {n}x{n}x{n}": (MatMul(n), (1, 1, n, n)),
                  "matmul 256x256x256": (MatMul(256), (1, 1, 256, 256)),
                  "1x1 conv 512->512 @64x64 (GEMM 512x512x4096)": (nn.Conv2d(512, 512, 1, bias=False),
                                                                  (1, 512, 64, 64)),
                  "1x1 conv 256->256 @32x32 (GEMM 256x256x1024)": (nn.Conv2d(256, 256, 1, bias=False),
                                                                  (1, 256, 32, 32))}
    reference = {name: rate(m, shape, args.threads, min_time)[2] for name, (m, shape) in references.items()}
    peak = max(reference.values())
    print("; ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in reference.items()) + " (the best is the reference)")
    rows = []
    for kind, key in cases:
        ms, gflops, speed = rate(key.build(), key.input_shape, args.threads, min_time)
        rows.append({"op": kind, "key": key.to_str(), "ms": round(ms, 4), "gflops": round(gflops, 5),
                     "gflop_per_s": round(speed, 2), "fraction_of_matmul_peak": round(speed / peak, 4)})
        print(f"{kind:36s} {ms:8.3f} ms  {speed:7.1f} GFLOP/s  {100 * speed / peak:5.1f}% of the matmul peak")
    again = {name: rate(m, shape, args.threads, min_time)[2] for name, (m, shape) in references.items()}
    print("again at the end: " + "; ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in again.items()))
    out = {"backend": "onnxruntime", "threads": args.threads, "quick": args.quick,
           "note": "indicative: measured on a shared machine under load",
           "peak_gflop_per_s": peak, "references_gflop_per_s": {"start": reference, "end": again}, "rows": rows}
    name = "mobile_ops_peak_quick" if args.quick else "mobile_ops_peak"
    print(f"saved {save_result(name, out, args.results_dir)}")


if __name__ == "__main__":
    main()
