"""Wall and CPU time of `segnas demo` on a fresh machine, by part, and what the demo reports.

`segnas demo` is the README's first command; the goal: the whole demo within 5 minutes on 2 cores.

    taskset -c 0,1 python benchmarks/demo/demo_time.py            # on 2 quiet cores
    python benchmarks/demo/demo_time.py --name smoke --results-dir /tmp/r -- --steps 2   # checks the script

Runs ``segnas demo`` (the flags after ``--`` are passed on) in a fresh temporary folder, as a new
user would, with an empty segnas cache (``$SEGNAS_CACHE``; ``--warm-cache`` keeps the user's): the
latency table the demo predicts with is built during the demo, as on a fresh machine. Installing
the package is not counted. Records, for the whole demo and for each of its parts:

- wall seconds, and CPU seconds of the demo process (all its threads, and the processes it waited
  for), read from ``/proc`` when the part ends (Linux; without ``/proc`` only the totals);
- the parts end where the demo says so: its first line (start-up: interpreter and imports), the
  comparison's first line (the latency target and the data checks), each job's result in the run
  directory's ``jobs.jsonl`` (each search, each training), the compare table (the latency session
  and compare.json/.md/pareto.png), the HTML report's line, and the exit (the sample predictions).

Also kept: each job's own figures from ``jobs.jsonl`` (search CPU and wall seconds, training CPU
seconds and steps), the demo's table (compare.json's rows: val mIoU, latency against the target,
parameters, GFLOPs, status), its notes (a latency measurement too noisy to report) and the machine
(cores this process may run on, load average before the start). Saves <results-dir>/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

#: The goal: the whole demo within this many seconds on 2 cores of a fresh machine.
GOAL_SECONDS = 300.0
#: Lines of the demo's output that end a part (a line starting with the text ends the part named).
LINE_MARKS = (("setting the latency target", "start-up (interpreter, imports)"),
              ("compare: ", "latency target and data checks"),
              ("# Comparison", "latency session, compare.json/.md, pareto.png"),
              ("report: ", "HTML report"))
LAST_PART = "sample predictions, exit"
#: Figures kept from each compare.json row.
ROW_FIELDS = ("name", "kind", "status", "val_miou_mean", "test_miou_mean", "latency_ms", "latency_iqr_ms",
              "latency_vs_target", "on_target", "predicted_ms", "params", "gflops", "search_cpu_seconds",
              "train_cpu_seconds")


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` and the children it waited for, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def job_label(key: str) -> str:
    """``search:saswot`` -> ``search: saswot``; ``train:fast_scnn:seed0`` -> ``training: fast_scnn, seed 0``."""
    kind, _, rest = key.partition(":")
    if kind == "train":
        name, _, seed = rest.rpartition(":")
        return f"training: {name}, seed {seed.removeprefix('seed')}"
    return f"{kind}: {rest}"


class Clock:
    """Parts of a running demo: each ends at a mark (a line of its output, a job's result)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.start = pid, time.perf_counter()
        self.parts: list[dict[str, Any]] = []
        self.last_wall, self.last_cpu = 0.0, 0.0

    def mark(self, label: str, cpu: float | None = None) -> None:
        """End the current part, named ``label``, now (``cpu``: the process's CPU seconds, else read)."""
        wall = time.perf_counter() - self.start
        cpu = cpu_seconds(self.pid) if cpu is None else cpu
        spent = round(cpu - self.last_cpu, 1) if cpu is not None and self.last_cpu is not None else None
        self.parts.append({"part": label, "wall_seconds": round(wall - self.last_wall, 1), "cpu_seconds": spent})
        self.last_wall, self.last_cpu = wall, cpu


@dataclass
class DemoRun:
    """One finished demo process."""

    code: int
    wall_seconds: float
    cpu_seconds: float
    parts: list[dict[str, Any]]
    stdout: list[str]
    stderr: str


def run_demo(command: list[str], cwd: Path, env: dict[str, str]) -> DemoRun:
    """Run the demo in ``cwd``, marking its parts as it reports them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(cwd / "stderr.txt", "w+b") as err:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
        clock, lines, pending, seen_jobs = Clock(proc.pid), [], b"", set()
        marks = list(LINE_MARKS)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        open_pipe = True
        while open_pipe:
            if sel.select(timeout=0.1):
                chunk = os.read(proc.stdout.fileno(), 65536)
                open_pipe = bool(chunk)
                pending += chunk
                *done, pending = pending.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    lines.append(line)
                    hit = next((m for m in marks if line.startswith(m[0])), None)
                    if hit is not None:
                        marks = marks[marks.index(hit) + 1:]  # each mark once, in order
                        clock.mark(hit[1])
            for path in sorted(cwd.glob("runs/*/jobs.jsonl")):
                for text in path.read_text().split("\n")[:-1]:  # whole lines only
                    if (key := json.loads(text).get("key")) not in seen_jobs:
                        seen_jobs.add(key)
                        clock.mark(job_label(key))
        code = proc.wait()
        wall = time.perf_counter() - clock.start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        clock.mark(LAST_PART, cpu=cpu if clock.last_cpu is not None else None)
        if pending:
            lines.append(pending.decode(errors="replace"))
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return DemoRun(code, wall, cpu, clock.parts, lines, stderr)


def demo_figures(run: Path) -> dict[str, Any]:
    """What the demo's run directory reports: the table, the target, each job's own figures."""
    summary = json.loads((run / "compare.json").read_text())
    jobs = {}
    for text in (run / "jobs.jsonl").read_text().splitlines():
        record = json.loads(text)
        r = record.get("result") or {"status": f"failed: {record.get('failed')}"}
        jobs[record["key"]] = {k: r[k] for k in ("status", "search_cpu_seconds", "search_wall_seconds",
                                                 "predicted_ms", "train_cpu_seconds", "steps", "epochs",
                                                 "val_miou") if k in r}
    rows = [{**{k: row.get(k) for k in ROW_FIELDS},
             "steps": next((s["steps"] for s in row["seeds"] if s.get("steps") is not None), None)}
            for row in summary["rows"]]
    s = summary["settings"]
    return {"target_ms": summary["target_ms"], "latency": summary["latency"], "train_budget": summary["train_budget"],
            "search_budget": summary["search_budget"], "size": s["data"]["crop_size"],
            "compare_total_cpu_hours": summary["total_cpu_hours"], "notes": summary["notes"], "rows": rows,
            "jobs": jobs, "outputs": sorted(p.name for p in run.iterdir() if p.is_file())}


def main() -> None:
    argv = sys.argv[1:]
    demo_args = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Flags after -- go to `segnas demo` (e.g. -- --steps 2).")
    ap.add_argument("--name", default="main", help="result file name")
    ap.add_argument("--results-dir", default=str(results_dir(__file__)), help="where the result file goes")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use the user's segnas cache (latency tables) instead of an empty one")
    ap.add_argument("--work-dir", default=None,
                    help="run in this new folder and keep it (default: a temporary folder, removed)")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    cli = Path(sys.executable).with_name("segnas")
    command = ([str(cli)] if cli.is_file() else [sys.executable, "-m", "segnas"]) + ["demo", *demo_args]
    if args.work_dir:
        work = Path(args.work_dir)
        if work.exists() and any(work.iterdir()):
            sys.exit(f"--work-dir {work}: not empty (the demo must start in a fresh folder)")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="segnas-demo-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not args.warm_cache:
        env["SEGNAS_CACHE"] = str(work / "cache")
    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"running `segnas demo {' '.join(demo_args)}` in {work} ({cores} cores; load {load[0]:.1f})", flush=True)
    try:
        run = run_demo(command, work, env)
        if run.code != 0:
            sys.exit(f"segnas demo exited with {run.code}:\n" + "\n".join(run.stdout[-20:]) + "\n" + run.stderr[-3000:])
        runs = sorted(p for p in (work / "runs").iterdir() if (p / "compare.json").is_file())
        if not runs:
            sys.exit(f"segnas demo wrote no compare.json under {work / 'runs'}")
        figures = demo_figures(runs[-1])
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    wall, within = run.wall_seconds, run.wall_seconds <= GOAL_SECONDS
    result = {"command": " ".join(["segnas", "demo", *demo_args]), "demo_args": demo_args,
              "goal_seconds": GOAL_SECONDS, "wall_seconds": round(wall, 1), "cpu_seconds": round(run.cpu_seconds, 1),
              "within_goal": within, "fresh_cache": not args.warm_cache, "cores_available": cores,
              "load_before": [round(x, 2) for x in load], "parts": run.parts, **figures}
    path = save_result(args.name, result, args.results_dir)
    for p in run.parts:
        cpu_text = f", {p['cpu_seconds']:.0f} CPU-s" if p["cpu_seconds"] is not None else ""
        print(f"  {p['part']}: {p['wall_seconds']:.1f} s{cpu_text}")
    print(f"segnas demo: {wall:.0f} s wall, {run.cpu_seconds:.0f} CPU-s on {cores} cores "
          f"({'within' if within else 'over'} the {GOAL_SECONDS / 60:.0f}-minute goal); saved {path}")


if __name__ == "__main__":
    main()
