"""Bring a finished comparison into the study's results: its figures, table and Pareto plot.

    python benchmarks/compare/collect.py RUN_DIR [--name compare_camvid]

``RUN_DIR`` is a finished ``segnas compare`` run directory (one holding ``compare.json``; use
``segnas compare --status RUN_DIR`` while it runs). Writes ``results/<name>.json`` (``compare.json``
with the machine and date, every found architecture embedded), ``results/<name>.md`` (its
``compare.md``) and ``results/<name>.png`` (its ``pareto.png``); the README's headline table and the
study's page are then generated from them (``python benchmarks/readme_tables.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

from segnas.utils import atomic_write, atomic_write_text  # noqa: E402

RESULTS = results_dir(__file__)


def collect(run_dir: Path, name: str, out: Path) -> Path:
    """The run's compare.json, compare.md and pareto.png as ``out/<name>.*``."""
    summary_path = run_dir / "compare.json"
    if not summary_path.is_file():
        sys.exit(f"{run_dir}: no compare.json (not finished? `segnas compare --status {run_dir}` shows where it is)")
    summary = json.loads(summary_path.read_text())
    path = save_result(name, {**summary, "run_dir": str(run_dir)}, out)
    atomic_write_text(out / f"{name}.md", (run_dir / "compare.md").read_text())
    atomic_write(out / f"{name}.png", lambda p: shutil.copyfile(run_dir / "pareto.png", p))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", default="compare_camvid")
    ap.add_argument("--results-dir", default=str(RESULTS))
    args = ap.parse_args()
    path = collect(args.run_dir, args.name, Path(args.results_dir))
    print(f"saved {path} (and its .md and .png)")


if __name__ == "__main__":
    main()
