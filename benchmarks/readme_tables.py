"""Regenerate the README's benchmark tables from benchmarks/results/*.json (never typed by hand).

    python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- BEGIN GENERATED TABLES -->", "<!-- END GENERATED TABLES -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine_line(r: dict) -> str:
    m = r["machine"]
    return f"*{r['date']}, {m['cpu']}, {m['cores']} cores, torch {m['torch']}.*"


def train_camvid(r: dict) -> list[str]:
    s = r["settings"]
    lines = ["### Fast-SCNN trained from scratch on CamVid (`benchmarks/train_camvid.py`)", "",
             "| val mIoU (last) | best | training time | epochs | wall s/epoch (median) | first ≥ 50% at | peak RSS |",
             "|---|---|---|---|---|---|---|",
             f"| {100 * r['final_val_miou']:.1f}% | {100 * r['best_val_miou']:.1f}% | {r['train_minutes']} min | "
             f"{r['epochs']} | {r['seconds_per_epoch_median']} s | "
             f"{r['first_50_miou_at_train_minutes'] if r['first_50_miou_at_train_minutes'] is not None else 'never'} min | "
             f"{r['peak_rss_mb']:.0f} MB |", "",
             f"Crop {s['data']['crop_size']}, batch {s['data']['batch_size']}, {s['optim']['name']} lr {s['optim']['lr']}, "
             f"{s['loss']['kind']} loss, bf16={s['bf16']}, channels-last={s['channels_last']}, {s['threads']} threads; "
             f"training time counted on the {s['budget_clock']} clock. " + machine_line(r), "",
             "| " + " | ".join(r["per_class_iou"]) + " |", "|" + "---|" * len(r["per_class_iou"]),
             "| " + " | ".join(f"{100 * v:.1f}" for v in r["per_class_iou"].values()) + " |", ""]
    return lines


def demo(r: dict) -> list[str]:
    return ["### `segnas demo` (`benchmarks/demo_time.py`)", "",
            f"{r['wall_seconds']:.0f} s wall on 2 cores (setup excluded), {r['epochs']} epochs of Fast-SCNN on the "
            f"synthetic scenes at 128x160, val mIoU {100 * r['val_miou']:.1f}%. " + machine_line(r), ""]


def synthetic(r: dict) -> list[str]:
    lines = ["### Does the synthetic dataset separate architectures? (`benchmarks/synthetic_separation.py`)", "",
             "| network | params | val mIoU | Pole IoU | epochs |", "|---|---|---|---|---|"]
    for label, n in r["networks"].items():
        lines.append(f"| {label}: {n['model']} | {n['params']:,} | {100 * n['val_miou']:.1f}% | "
                     f"{100 * n['per_class_iou']['Pole']:.1f}% | {n['epochs']} |")
    lines += ["", f"{r['minutes_per_network']} training-minutes each at {r['size'][0]}x{r['size'][1]}; "
              f"gap {100 * r['miou_gap']:.1f} mIoU points. " + machine_line(r), ""]
    return lines


def zoo(r: dict) -> list[str]:
    lines = ["### Zoo on this machine (`benchmarks/zoo.py`)", "",
             "| model | size | backend | params (M) | GFLOPs | median ms | FPS | % of fp32 matmul peak |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['size']} | {row['backend']} | {row['params_m']:.2f} | "
                     f"{row['gflops']:.2f} | {row['median_ms']:.1f} | {row['fps']:.1f} | "
                     f"{100 * row['fraction_of_peak']:.1f} |")
    peak = r["rows"][0]["peak_gflops_s"] if r["rows"] else float("nan")
    lines += ["", f"GFLOPs = 2 × multiply-accumulates (most papers' \"FLOPs\" are our GMACs = GFLOPs / 2); "
              "the fraction of peak can pass 100% where the runtime uses fast convolution algorithms "
              "(Winograd) that do fewer arithmetic operations than the direct convolution we count; "
              f"{r['threads']} threads, batch 1, 19 classes; measured fp32 matmul peak {peak:.0f} GFLOP/s. "
              + machine_line(r), ""]
    return lines


def predictor(r: dict) -> list[str]:
    lines = ["### Latency predictor vs measurement (`benchmarks/latency_predictor.py`)", "",
             "| size | backend | sampling | architectures | latency range | median abs. error | Spearman ρ | ρ between two timing rounds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in r["summary"]:
        lo, hi = s["measured_ms_range"]
        lines.append(f"| {s['size']} | {s['backend']} | {s.get('sampling', 'uniform')} | {s['n']} | {lo:.0f}–{hi:.0f} ms | "
                     f"{100 * s['median_abs_rel_error']:.1f}% | {s['spearman']:.3f} | "
                     f"{s.get('repeatability_spearman', float('nan')):.3f} |")
    return lines


def predictor_uniform(r: dict) -> list[str]:
    return [line for line in predictor(r)[4:] if line.startswith("|")]  # extra rows for the same table


def rounds_text() -> str:
    parts = []
    for name in ("latency_predictor", "latency_predictor_uniform"):
        r = load(name)
        if r and r["points"] and "rounds_ms" in r["points"][0]:
            parts.append(f"{name.removeprefix('latency_predictor').lstrip('_') or 'spread'}: "
                         f"{len(r['points'][0]['rounds_ms'])}")
    return ", ".join(parts)


def main() -> None:
    sections = []
    for name, fn in (("train_camvid", train_camvid), ("demo", demo), ("synthetic_separation", synthetic), ("zoo", zoo),
                     ("latency_predictor", predictor), ("latency_predictor_uniform", predictor_uniform)):
        r = load(name)
        if r is not None:
            sections += fn(r)
    r = load("latency_predictor") or load("latency_predictor_uniform")
    if r is not None:
        sections += ["", "Uniform sampling draws every width uniformly, so networks crowd in a narrow latency band; "
                     "spread sampling first draws a per-network width cap. Networks are timed in interleaved "
                     f"rounds ({rounds_text()}; median kept); the last column is ρ between two single rounds, a measure of how well the timings repeat "
                     f"(medians over all rounds repeat better). Space `{r['space']}`. " + machine_line(r), "",
                     "![predicted vs measured](benchmarks/results/latency_predictor.png)", ""]
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + "\n".join(sections) + END + tail)
    print(f"updated {readme} with {len(sections)} lines")


if __name__ == "__main__":
    main()
