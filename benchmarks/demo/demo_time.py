"""Wall time of `segnas demo` (the README's first command, setup excluded) and what it reports.

    python benchmarks/demo/demo_time.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import ROOT, results_dir, save_result  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "segnas", "demo", "--out-dir", out], capture_output=True,
                              text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        run = next(Path(out).iterdir())
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        final = [r for r in records if "val_miou" in r][-1]
    result = {"wall_seconds": round(wall, 1), "epochs": records[-1]["epoch"], "val_miou": round(final["val_miou"], 4),
              "summary_line": next((x for x in proc.stdout.splitlines() if x.startswith("val mIoU")), "")}
    path = save_result("main", result, results_dir(__file__))
    print(f"segnas demo: {wall:.0f} s wall, {result['epochs']} epochs, val mIoU {100 * result['val_miou']:.1f}%; saved {path}")


if __name__ == "__main__":
    main()
