"""A comparison's Markdown: ``compare.md`` (what was compared, the answer, the table, per-class IoU)
and the table of ``segnas compare --status``."""

from __future__ import annotations

from typing import Any

from segnas.config.compare import TARGET_TOLERANCE
from segnas.report.format import is_number, pct, signed_pct
from segnas.report.verdict import compare_verdict


def hours(seconds: Any) -> str:
    """Seconds as hours, three decimals (``-`` for none, or for what is not a number)."""
    return f"{seconds / 3600:.3f}" if is_number(seconds) else "-"


def train_hours(cpu_seconds: Any, gpu_seconds: Any) -> str:
    """Training CPU-hours, and GPU-hours where some of it ran on a GPU."""
    if not is_number(gpu_seconds):
        return hours(cpu_seconds)
    cpu = f"{hours(cpu_seconds)} + " if is_number(cpu_seconds) else ""
    return f"{cpu}{hours(gpu_seconds)} GPU-h"


def compare_table(summary: dict[str, Any]) -> str:
    """``compare.md``: what was compared, the table (test column only with a test split), per-class IoU."""
    rows, test = summary["rows"], summary["test_split"] is not None
    s = summary["settings"]
    lines = [f"# Comparison: {s['data']['name']}, target {summary['target_ms']:g} ms ({summary['latency']})", "",
             compare_verdict(summary)[0], "",
             f"- final training: {summary['train_budget']}, "
             + (f"{s['train']['seeds']} seeds from {s['seed']}" if s['train']['seeds'] != 1
                else f"1 seed ({s['seed']}: no spread, a gap of 1-2 points may be a seed's)") + "; "
             f"search budget: {summary['search_budget']}",
             ("- val mIoU: mean ± std over seeds; latency: no session ran (no network was trained);"
              if summary.get("latency_sessions", 1) == 0 else
              "- val mIoU: mean ± std over seeds; latency: every network in one interleaved session"
              + (f" ({n} sessions)" if (n := summary.get("latency_sessions") or 1) > 1 else "")
              + f", {summary.get('latency_rounds') or 'its'} rounds in all, each network's figure from its blocks "
              + ("in one state of the host, the fastest it spent a quarter of the session in (probe: "
                 + str(s.get("measure_probe")) + ")"
                 if s.get("measure_probe") else "of its quietest round")
              + (f" on {m['cpu']} ({m['cores']} cores);" if (m := summary.get("latency_machine")) else ";")),
             "  at search: the found network measured at the end of its search, on the machine its latency",
             f"  table was measured on (on target: within ±{100 * TARGET_TOLERANCE:.0f}% there)",
             f"- total: {summary['total_cpu_hours']:.3f} CPU-hours (searches and final trainings)"
             + (f"; the checks before the searches (mostly timing the latency table, fitting its corrections): "
                f"{setup:.3f} CPU-hours" if (setup := summary.get("latency_setup_cpu_hours")) else "")]
    if (devices := summary.get("train_devices") or ["cpu"]) != ["cpu"]:
        lines.append(f"- final trainings ran on: {', '.join(devices)} (the same steps and recipe everywhere)")
    if not test:
        lines.append("- no test split scored (test_split: null)" if s.get("test_split", "test") is None else
                     f"- no {s.get('test_split', 'test')!r} split in {s['data']['name']}: test mIoU left out")
    elif (held := (s["data"].get("options") or {}).get("holdout")) and summary["test_split"] == "holdout":
        lines.append(f"- holdout mIoU: training sequence {held}, left out of training (unseen streets)")
    lines += [""] + [f"> **Note:** {note}" for note in summary["notes"]] + ([""] if summary["notes"] else [])
    head = ["network", "kind", "val mIoU %"] + ([f"{summary['test_split']} mIoU %"] if test else []) + [
        "latency ms", "vs target", "at search ms", "params M", "GFLOPs", "search CPU-h", "train CPU-h", "status"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["kind"], pct(r["val_miou_mean"], r["val_miou_std"])]
        if test:
            cells.append(pct(r["test_miou_mean"], r["test_miou_std"]))
        cells += ["-" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}",
                  signed_pct(r["latency_vs_target"]),
                  "-" if r.get("search_measured_ms") is None
                  else f"{r['search_measured_ms']:.2f} ({signed_pct(r['search_vs_target'])})",
                  "-" if r["params"] is None else f"{r['params'] / 1e6:.3f}",
                  "-" if r["gflops"] is None else f"{r['gflops']:.3f}",
                  hours(r["search_cpu_seconds"]), train_hours(r["train_cpu_seconds"], r.get("train_gpu_seconds")),
                  r["status"].replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    for key, split in (("per_class_iou", "val"), ("test_per_class_iou", summary["test_split"])):
        scored = [r for r in rows if r.get(key)]
        if not scored:
            continue
        classes = list(scored[0][key])
        lines += ["", f"## Per-class {split} IoU % (mean over seeds)", "",
                  "| class | " + " | ".join(r["name"] for r in scored) + " |", "|" + "---|" * (len(scored) + 1)]
        for c in classes:
            lines.append(f"| {c} | " + " | ".join(pct(r[key].get(c)) for r in scored) + " |")
    return "\n".join(lines) + "\n"


def status_table(status: dict[str, Any]) -> str:
    """``compare_status`` as a Markdown table."""
    rows = status["jobs"]
    head = ["job", "state", "val mIoU %", f"{status['test_split'] or 'test'} mIoU %", "steps", "predicted ms",
            "measured ms", "CPU-h or GPU-h", "progress or reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["job"], r["state"], pct(r.get("val_miou")), pct(r.get("test_miou")),
                 str(r.get("steps") or "-"), "-" if r.get("predicted_ms") is None else f"{r['predicted_ms']:.2f}",
                 "-" if r.get("measured_ms") is None else f"{r['measured_ms']:.2f}",
                 train_hours(r.get("cpu_seconds"), r.get("gpu_seconds")),
                 (r.get("progress") or r.get("why") or "").replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    done = sum(r["state"] in ("done", "failed", "skipped") for r in rows)
    left = status.get("remaining")
    pace = ""
    if left:
        names = {"search": ("search", "searches"), "train": ("training", "trainings")}
        parts = [f"{n} {names[kind][n != 1]} "
                 + (f"(~{h:.1f} h at the pace so far)" if h is not None else "(none finished yet to time)")
                 for kind, n in left["jobs_left"].items() if n
                 for h in [left["hours"][kind]]]
        pace = f"; left: {', '.join(parts)}" if parts else ""
    failed = list(dict.fromkeys(r["job"].split(":")[1] for r in rows
                                if r["state"] == "failed" and not r.get("retried")))
    again = (f"\nA failed job stays failed when the comparison resumes; `segnas compare --resume "
             f"{status.get('run_dir', 'RUN')} --rerun NAME` runs NAME's jobs again (e.g. after a fix; failed: "
             f"{', '.join(failed)}).\n") if failed else ""
    run, ended = status.get("run_dir", "RUN"), bool(rows) and done == len(rows)
    if status.get("results_written") is not False:
        state = ""
    elif status.get("running"):
        state = ("\nEvery job has ended; the comparison is measuring the networks (one latency session), then "
                 "writes the results.\n" if ended else "\nA process is running the comparison now.\n")
    elif ended:
        state = (f"\nEvery job has ended; the latency session and the results are still to come: `segnas compare "
                 f"--resume {run}` on the deployment machine.\n")
    else:
        state = f"\nNo process is running the comparison now: `segnas compare --resume {run}` continues it.\n"
    return "\n".join(lines) + f"\n\n{done} of {len(rows)} jobs ended{pace}\n{again}{state}"
