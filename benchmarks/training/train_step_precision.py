"""Training-step time in fp32 and bf16 autocast, NCHW and channels-last, on this CPU.

    python benchmarks/training/train_step_precision.py

Why: bf16 autocast speeds CPU training up only where the CPU computes bf16 in hardware
(AVX512-BF16 or AMX); elsewhere PyTorch emulates it. The trainer therefore falls back to fp32 there
(`segnas.engine.evaluate.usable_bf16`); this benchmark shows the ratio that decision rests on,
bypassing the fallback. One result file per CPU model: ``train_step_precision_<cpu>.json``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from segnas.cost.machine import cpu_has_native_bf16, cpu_model  # noqa: E402
from segnas.engine.evaluate import autocast_context  # noqa: E402
from segnas.engine.losses import SegmentationLoss  # noqa: E402
from segnas.utils import parse_size  # noqa: E402
from segnas.zoo import build_model  # noqa: E402


def step_ms(model_name: str, size: tuple[int, int], batch: int, bf16: bool, channels_last: bool,
            steps: int, seed: int = 0) -> float:
    """Median milliseconds of one SGD step (forward, CE loss with aux heads, backward, update)."""
    torch.manual_seed(seed)
    net = build_model(model_name, 11).train()
    images = torch.randn(batch, 3, *size)
    masks = torch.randint(0, 11, (batch, *size))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = SegmentationLoss("ce")
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t = time.perf_counter()
        with autocast_context(bf16):
            out = net(images)
        loss = loss_fn(out, masks)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fast_scnn")
    ap.add_argument("--size", type=parse_size, default=(360, 480), help="HxW")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for bf16 in (False, True):
        for channels_last in (False, True):
            ms = step_ms(args.model, tuple(args.size), args.batch, bf16, channels_last, args.steps)
            rows.append({"precision": "bf16" if bf16 else "fp32", "channels_last": channels_last, "ms_per_step": ms})
            print(f"{rows[-1]['precision']:>4} {'channels-last' if channels_last else 'NCHW':>13}: {ms:7.0f} ms/step")
    fp32 = min(r["ms_per_step"] for r in rows if r["precision"] == "fp32")
    bf16_best = min(r["ms_per_step"] for r in rows if r["precision"] == "bf16")
    slug = re.sub(r"[^a-z0-9]+", "_", cpu_model().lower()).strip("_")
    path = common.save_result(f"step_precision_{slug}", {
        "model": args.model, "size": list(args.size), "batch": args.batch, "steps": args.steps,
        "threads": args.threads, "native_bf16": cpu_has_native_bf16(), "rows": rows,
        "bf16_speedup": fp32 / bf16_best}, common.results_dir(__file__))
    print(f"native bf16: {cpu_has_native_bf16()}; best bf16 vs best fp32: {fp32 / bf16_best:.2f}x; saved {path}")


if __name__ == "__main__":
    main()
