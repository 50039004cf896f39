"""Carry a long comparison across machines: its finished jobs kept in the repository, resumed elsewhere.

    python benchmarks/compare/snapshot.py save RUN_DIR [--to benchmarks/compare/progress/camvid]
    python benchmarks/compare/snapshot.py restore RUN_DIR [--from benchmarks/compare/progress/camvid]
    segnas compare --resume RUN_DIR

The CamVid comparison takes more hours than one session on a 2-core machine has, and a session may
start on a fresh machine. ``save`` copies what a resumed comparison reads of every *ended* job (its
settings, ``jobs.jsonl``, the zoo selection, each ended search's and training's folder without
checkpoints or exported models, and the latency session once it has run) into a folder of the repository; ``restore`` rebuilds a run
directory from it on any machine. ``segnas compare --resume`` then reuses every ended job (they are
keyed in ``jobs.jsonl``; results hold paths relative to the run directory) and runs the rest. A job
under way when ``save`` runs is not kept: it starts again after ``restore``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from segnas.errors import SegnasError
from segnas.jobs.compare import JOBS_FILE, compare_status

DEFAULT = Path(__file__).resolve().parent / "progress" / "camvid"
#: Files a resumed comparison reads from the run directory itself.
RUN_FILES = ("config.yaml", JOBS_FILE, "zoo_selection.json", "latency.json")
#: Large files a resumed comparison never reads for an ended job.
LEFT_OUT = ("*.pt", "*.pth", "*.onnx", "*.xml", "*.bin")


def job_folder(run: Path, job: dict) -> Path:
    """The folder ``segnas compare`` gives a job of ``compare_status``."""
    if job["kind"] == "search":
        return run / "search" / job["name"]
    return run / "train" / f"{job['name']}-seed{job['seed']}"


def save(run: Path, dest: Path) -> list[str]:
    """Copy the ended jobs of comparison ``run`` into ``dest`` (replaced whole); their keys."""
    status = compare_status(run)
    ended = [job for job in status["jobs"] if job["state"] in ("done", "failed")]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        for job in ended:
            folder = job_folder(run, job)
            if folder.is_dir():
                shutil.copytree(folder, tmp / folder.relative_to(run), ignore=shutil.ignore_patterns(*LEFT_OUT))
        old = dest.with_name(f".{dest.name}-old")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [job["job"] for job in ended]


def restore(source: Path, run: Path) -> None:
    """A run directory at ``run`` rebuilt from a saved snapshot (``run`` must not exist)."""
    if not (source / "config.yaml").is_file():
        raise SegnasError(f"{source}: no saved comparison here (no config.yaml)")
    if run.exists():
        raise SegnasError(f"{run}: already exists; restore into a new path")
    partial = run.with_name(f".{run.name}.restoring")
    shutil.rmtree(partial, ignore_errors=True)  # what a cut restore left
    shutil.copytree(source, partial)
    partial.rename(run)  # the run directory appears whole or not at all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="keep the ended jobs of RUN_DIR")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--to", type=Path, default=DEFAULT)
    r = sub.add_parser("restore", help="rebuild RUN_DIR from a saved snapshot")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--from", dest="source", type=Path, default=DEFAULT)
    args = ap.parse_args()
    try:
        if args.command == "save":
            keys = save(args.run_dir, args.to)
            print(f"saved {len(keys)} ended jobs of {args.run_dir} in {args.to}: {', '.join(keys) or 'none'}")
        else:
            restore(args.source, args.run_dir)
            print(f"restored {args.run_dir}; continue with: segnas compare --resume {args.run_dir}")
    except SegnasError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
