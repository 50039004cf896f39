"""Scaling on one machine's cores: candidate evaluations on Ray with 1 and 2 workers (one torch
thread each), and data-parallel training under torchrun with 1 and 2 processes; speedup and
efficiency (goal: >= 1.8x for candidate evaluation at 2 workers).

    python benchmarks/scaling/scaling.py                 # the real measurement (a quiet machine, ~4 min; 3 interleaved repeats, medians)
    python benchmarks/scaling/scaling.py --smoke         # seconds: checks that every part runs

Candidate evaluation = SasWOT's scoring (the NWOT proxy of a network sampled from the default
multires space on 8 fixed 128x160 images, ``segnas.evaluate.ProxyEvaluator``) through ``segnas.parallel.WorkerPool`` on a local Ray
of as many CPUs as workers; the pool's start and each worker's set-up are excluded (a warm-up batch).
Training = the shared ``Trainer`` on fixed tensors, ``data.batch_size`` the global batch split over
the processes; throughput counted from the second epoch on.
Writes ``benchmarks/scaling/results/scaling.json`` (``--smoke``: ``scaling_smoke.json`` in a temporary
folder, unless ``--results-dir`` says where).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

from segnas.evaluate.proxy import ProxyEvaluator  # noqa: E402
from segnas.evaluate.groundtruth import sample_archs  # noqa: E402
from segnas.parallel import TaskResources, WorkerPool  # noqa: E402
from segnas.spaces.multires import MultiResSpace  # noqa: E402

#: SasWOT's own scoring setting: networks of the default multires space, 8 images (the smoke run:
#: a tiny space).
SPACE = MultiResSpace()
SMOKE_SPACE = MultiResSpace(layers=6, base_width=4, width_ratios=(0.5, 0.75, 1.0))
IMAGES = 8


def candidate_throughput(workers: int, candidates: int, size: tuple[int, int], space: MultiResSpace = SPACE) -> dict:
    """Candidate evaluations per second on a local Ray of ``workers`` CPUs, one thread each."""
    import ray

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(IMAGES, 3, *size, generator=g), torch.randint(0, 11, (IMAGES, *size), generator=g))]
    evaluator = ProxyEvaluator(space, "nwot", batches=batches, num_classes=11)
    archs = [a.to_dict() for a in sample_archs(space, candidates + 2 * workers, seed=1)]
    with WorkerPool("ray", workers, 1, resources=TaskResources(cpus=1)) as pool:
        pool.map(evaluator, archs[:2 * workers])  # start, import and set up every worker
        start = time.perf_counter()
        pool.map(evaluator, archs[2 * workers:])
        seconds = time.perf_counter() - start
    assert not ray.is_initialized()
    return {"workers": workers, "candidates": candidates, "seconds": round(seconds, 3),
            "per_second": round(candidates / seconds, 3)}


# ------------------------------------------------------------------------------ DDP
def ddp_worker(argv: list[str]) -> None:
    """One rank of the training measurement (run by torchrun)."""
    from torch.utils.data import TensorDataset

    from segnas.config.train import TrainConfig
    from segnas.engine import distributed
    from segnas.engine.rundir import RunDir
    from segnas.engine.trainer import Trainer
    from segnas.zoo import build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--images", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--size", type=int, nargs=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, *args.size, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    cfg = TrainConfig.model_validate({"data": {"batch_size": args.batch}, "epochs": args.epochs, "progress": False,
                                      "threads": 1, "loss": {"aux_weight": 0.0}})
    torch.manual_seed(0)
    model = build_model("fast_scnn", 2)
    trainer = Trainer(model, data, None, cfg, RunDir(args.run_dir), {"kind": "bench"}, {"names": ["a", "b"]})
    trainer.fit()
    if distributed.is_main():
        epochs = trainer.run.read_metrics()[1:]
        seconds = sum(r["epoch_s"] for r in epochs)
        samples = len(epochs) * (args.images // args.batch) * args.batch
        Path(args.run_dir, "throughput.json").write_text(json.dumps({"seconds": seconds, "samples": samples}))


def ddp_throughput(processes: int, batch: int, images: int, epochs: int, size: tuple[int, int]) -> dict:
    """Training samples per second with ``processes`` data-parallel processes (one thread each)."""
    with tempfile.TemporaryDirectory(prefix="segnas-scaling-") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               __file__, "_ddp_worker", tmp, "--batch", str(batch), "--images", str(images), "--epochs", str(epochs),
               "--size", *map(str, size)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"torchrun failed:\n{done.stderr[-3000:]}")
        r = json.loads(Path(tmp, "throughput.json").read_text())
    return {"processes": processes, "samples": r["samples"], "seconds": round(r["seconds"], 3),
            "per_second": round(r["samples"] / r["seconds"], 3)}


def speedup(one: dict, two: dict, n: int = 2) -> dict:
    s = two["per_second"] / one["per_second"]
    return {"speedup": round(s, 3), "efficiency": round(s / n, 3)}


def median_run(runs: list[dict]) -> dict:
    """The run of median throughput among repeats of one setting."""
    return sorted(runs, key=lambda r: r["per_second"])[len(runs) // 2]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ddp_worker":
        return ddp_worker(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run that only checks every part works")
    ap.add_argument("--candidates", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved measurements of each setting (median kept)")
    ap.add_argument("--results-dir", default=None, help="where the result file goes (default: the study's results "
                    "folder; a smoke run's: a temporary folder)")
    args = ap.parse_args()
    if args.smoke:
        cand, csize, ddp = args.candidates or 4, (32, 48), dict(batch=4, images=8, epochs=2, size=(32, 48))
    else:
        cand, csize, ddp = args.candidates or 32, (128, 160), dict(batch=8, images=64, epochs=4, size=(128, 192))
    repeats = 1 if args.smoke else args.repeats
    runs: dict[str, list[dict]] = {"candidates": [], "ddp": []}
    for _ in range(repeats):  # interleaved 1, 2, 1, 2, ...: drifts of the machine hit both alike
        runs["candidates"] += [candidate_throughput(w, cand, csize, SMOKE_SPACE if args.smoke else SPACE)
                               for w in (1, 2)]
        runs["ddp"] += [ddp_throughput(p, **ddp) for p in (1, 2)]
    rows = {name: [median_run(r[i::2]) for i in (0, 1)] for name, r in runs.items()}
    out = {"smoke": args.smoke, "repeats": repeats, **rows, "runs": runs,
           "candidate_scaling": speedup(*rows["candidates"]), "ddp_scaling": speedup(*rows["ddp"]),
           "goal": "candidate evaluation speedup >= 1.8 at 2 workers"}
    for name in ("candidates", "ddp"):
        for r in rows[name]:
            print(name, "(median)", r)
    print("candidate evaluation", out["candidate_scaling"], "| DDP training", out["ddp_scaling"])
    if args.smoke:
        print("(smoke run: the figures mean nothing on a busy machine)")
    folder = args.results_dir or (tempfile.mkdtemp(prefix="scaling-smoke-") if args.smoke else str(results_dir(__file__)))
    print(f"-> {save_result('scaling_smoke' if args.smoke else 'scaling', out, folder)}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
