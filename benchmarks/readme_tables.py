"""Regenerate the README's benchmark tables from benchmarks/results/*.json (never typed by hand).

    python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, baselines  # noqa: E402
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


def fasterseg(runs: dict[str, dict]) -> list[str]:
    lines = ["### FasterSeg on CamVid (`benchmarks/fasterseg_camvid.py`)", "",
             "| latency regularization | search | student: predicted → measured ms (target) | params | GFLOPs "
             "| supernet mIoU of its heads | mean width ratio | operators | val mIoU after training |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in runs.items():
        last = [t for t in r["search_trace"] if t["phase"] == "search"][-1]
        heads = f"{100 * last['arch1_miou_02']:.1f}% / {100 * last['arch1_miou_12']:.1f}%" if "arch1_miou_12" in last else "–"
        cells = sum(b["cells"] for b in r["student_arch"]["branches"])
        ops = f"{cells} cells: " + ", ".join(f"{k} {v}" for k, v in sorted(r["student_arch"]["ops"].items()))
        trained = f"{100 * r['student_val_miou']:.1f}% (teacher {100 * r['teacher_val_miou']:.1f}%)" \
            if r.get("student_val_miou") is not None else "not trained"
        measured = r.get("student_remeasured_ms", r["student_measured_ms"])  # timed again on a quiet machine
        lines.append(f"| {mode} | {r['search_seconds'] / 60:.0f} min | {last['student_latency_ms']:.1f} → "
                     f"{measured:.1f} ({r['target_ms']:.0f}, {100 * (measured / r['target_ms'] - 1):+.0f}%) | "
                     f"{r['student_params'] / 1e6:.2f}M | {r['student_gflops']:.1f} | {heads} | "
                     f"{r['student_arch']['mean_width_ratio']:.2f} | {ops} | {trained} |")
    lines.append("")
    for mode, r in runs.items():
        trace = [t for t in r["search_trace"] if t["phase"] == "search"]
        lines += [f"Per search epoch ({mode}), λ → derived student's predicted latency: " + ", ".join(
            f"{t['lambda']:.3g} → {t['student_latency_ms']:.1f} ms" for t in trace) + ".", ""]
    d = runs.get("decoupled")
    if d:
        s = d["settings"]
        lines += [f"Space: {s['layers']} layers, base width {s['base_width']}; search on {s['search_size']} images "
                  f"({s['pretrain_epochs']} pre-training + {s['search_epochs']} search epochs), latency at {s['size']} "
                  "on ONNX Runtime, 2 threads. Supernet mIoU: the student's two branch-pair heads (02 / 12) at "
                  "argmax widths on 50 val images at the search size. Both searches start from the same pre-trained supernet "
                  "(`--pretrained`). " + machine_line(d), ""]
    return lines


def ssr(r: dict) -> list[str]:
    lines = ["### SSR on CamVid (`benchmarks/ssr_camvid.py`)", "",
             "| run | search | search epochs | s/epoch first → last | space shrunk to one network | gap at epoch "
             f"{r['gap_at_equal_epochs']['epoch']} (soft − argmax val mIoU) | mean gap over epochs 1–{r['gap_at_equal_epochs']['epoch']} | network: predicted → measured ms (target) | params | GFLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    k = r["gap_at_equal_epochs"]["epoch"]
    for name, run in r["runs"].items():
        rows = [t for t in run["trace"] if t["phase"] == "search"]
        lines.append(f"| {name} | {run['search_seconds'] / 60:.0f} min | {len(rows)} | {rows[0]['epoch_s']:.0f} → "
                     f"{rows[-1]['epoch_s']:.0f} | {'yes' if run['converged'] else 'no'} | "
                     f"{100 * r['gap_at_equal_epochs'][name]:+.1f} pts | "
                     f"{100 * sum(t['gap'] for t in rows[:k]) / k:+.1f} pts | "
                     f"{run['arch_predicted_ms']:.1f} → {run['measured_ms']:.1f} ({r['target_ms']}, "
                     f"{100 * run['latency_vs_target']:+.0f}%) | "
                     f"{run['params'] / 1e6:.2f}M | {run['gflops']:.2f} |")
    for name, run in r["runs"].items():
        rows = [t for t in run["trace"] if t["phase"] == "search"]
        lines += ["", f"Per search epoch ({name}): seconds, candidates left after the epoch's shrinking (operators / "
                  "mid widths / out widths), gap — " + "; ".join(
                      f"{t['epoch_s']:.0f} s, {t.get('active_ops')}/{t.get('active_mid')}/{t.get('active_out')}, "
                      f"{100 * t['gap']:+.1f}" for t in rows) + "."]
    if r.get("training"):
        t = r["training"]
        how = ", in NCHW as every joint network under bf16 (see `JointNet`)"
        how += f", gradients clipped at {t['clip_grad_norm']}" if t.get("clip_grad_norm") else ""
        lines += ["", f"The SSR network trained for {t['train_minutes']:.0f} min (recipe of `train_camvid.py`{how}): "
                  f"val mIoU **{100 * t['final_val_miou']:.1f}%** (see the same-budget table below)."]
    else:
        lines += ["", "The found network is not trained (`--final-minutes 0`)."]
    if (long := load("ssr_camvid_40epochs")) is not None:
        t, first, last = long["trace"], long["trace"][0], long["trace"][-1]
        tail = t[-8:]
        lines += ["", f"A longer SSR-only run (`{long['command']}`, cap {len(t)} epochs, same space, target and "
                  f"pre-trained supernet): operators {first['active_ops']} → {last['active_ops']}, width candidates "
                  f"{first['active_mid']} → {last['active_mid']}, {first['epoch_s']:.0f} → {last['epoch_s']:.1f} s/epoch, "
                  f"gap over the last {len(tail)} epochs {100 * min(x['gap'] for x in tail):+.1f} to "
                  f"{100 * max(x['gap'] for x in tail):+.1f} pts; shrunk to one network: "
                  f"{'yes' if last['single'] else 'no'}. Its network: predicted {last['derived_latency_ms']:.1f} ms, "
                  f"measured {long['summary']['measured_ms']:.1f} ms (target {long['summary']['target_ms']} ms); not trained."]
    lines += ["", f"Space range {r['space_latency_range_ms'][0]:.0f}–{r['space_latency_range_ms'][1]:.0f} ms predicted; "
              f"search on {r['settings']['search_size']} images, latency at {r['settings']['size']} on ONNX Runtime. "
              "`no_ssr` starts from the same pre-trained supernet with the SSR loss off. " + machine_line(r), ""]
    return lines


def joint_latency(r: dict) -> list[str]:
    lines = ["### Latency predictor on the `joint` space (`benchmarks/joint_latency_error.py`)", "",
             "| network | predicted ms | measured ms | error | one block: table → in network (ms) |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        block = (f"{row['block_predicted_ms']:.2f} → {row['block_measured_ms']:.2f}" if "block_predicted_ms" in row else "–")
        lines.append(f"| {row['network']} | {row['predicted_ms']:.1f} | {row['measured_ms']:.1f} | "
                     f"{100 * row['error']:+.0f}% | {block} |")
    lines += ["", "One-kind networks fill every slot with one candidate at full width. Their blocks cost less inside a "
              "network than alone in the table, so the predictor over-estimates them. The large under-estimates are "
              "random networks with half-resolution blocks in the 1/8 stage. The same network can also time very "
              "differently from one process to the next, so part of this error is measurement, not prediction. "
              "ONNX Runtime, 2 threads, interleaved rounds, medians. " + machine_line(r), ""]
    return lines


def proxy_groundtruth(r: dict) -> list[str]:
    b = r["budget"]
    if "short_steps" in b:
        short, longer = f"{b['short_steps']} optimizer steps", f"{b['long_steps']} steps"
    else:
        short, longer = f"{b['short_minutes']:g} CPU-minutes", f"{b['long_minutes']:g} minutes"
    lines = [f"### CamVid ground truth for zero-cost proxies (`benchmarks/proxy_groundtruth.py`, {short})", "",
             f"{r['n']} `{r['space']}` networks ({r['space_settings']}) sampled over the latency range "
             f"({r['latency_ms_range'][0]:.1f}–{r['latency_ms_range'][1]:.1f} ms predicted at "
             f"{r['latency']['size'][0]}x{r['latency']['size'][1]}, ONNX Runtime), each trained from scratch on CamVid "
             f"at {r['train_size'][0]}x{r['train_size'][1]} for **{short}** "
             f"({b['threads']} thread{', ' + b['clock'] if 'clock' in b else ''}), val mIoU "
             f"{100 * r['val_miou_range'][0]:.1f}–{100 * r['val_miou_range'][1]:.1f}%. "
             f"mIoU vs latency: τ {r['miou_vs_latency']['kendall_tau']:+.2f}; vs parameters: τ "
             f"{r['miou_vs_params']['kendall_tau']:+.2f}."]
    if r.get("short_vs_long"):
        c = r["short_vs_long"]
        lines.append(f"How far the short budget ranks like a longer one: {c['n']} of them, spread over the ranking, "
                     f"retrained for {longer}: Kendall τ {c['kendall_tau']:.2f}, Spearman ρ "
                     f"{c['spearman_rho']:.2f}.")
    for c in r.get("seed_vs_seed") or []:
        seeds = f"Training seeds {c['seeds'][0]} and {c['seeds'][1]}" if c.get("seeds") else "Two training seeds"
        lines.append(f"{seeds} of the same {c['n']} networks rank them alike only to Kendall τ "
                     f"{c['kendall_tau']:.2f} (Spearman ρ {c['spearman_rho']:.2f}).")
    if ceiling := r.get("noise_ceiling_tau"):
        parts = [f"{v:.2f} against {k.replace('_', ' ')}" for k, v in ceiling.items()]
        lines.append("So even a perfect proxy, one that knew every network's expected mIoU, would reach only about "
                     f"Kendall τ {', '.join(parts)} (Gaussian noise model, `noise_ceiling_tau`).")
    if c := r.get("mean_of_seeds_vs_long"):
        lines.append(f"The mean over seeds against the longer budget: Kendall τ {c['kendall_tau']:.2f} "
                     f"(ρ {c['spearman_rho']:.2f}).")
    if devices := r.get("devices"):
        lines.append("Trained on: " + "; ".join(f"{name} {', '.join(d)}" for name, d in devices.items()) + ".")
    return lines + ["Data: `benchmarks/data/groundtruth_*.jsonl`. " + machine_line(r), ""]


def proxies(r: dict) -> list[str]:
    s = r["settings"]
    runs = r.get("training_runs_per_network", 1)
    title = f", ground truth averaged over {runs} training seeds" if runs > 1 else ""
    title += ", parsimony cross-validated" if s.get("cv_folds") else ""
    if s.get("inits", 1) > 1:
        title += (f", every proxy averaged over {s['inits']} weight initializations"
                  + (" (discovery evolved on the averages)" if s.get("evolve_on_inits") else ""))
    extras = {"GA": "the activations' gradients (GA)", "R": "each layer's resolution (R)"}
    if s.get("extra_terminals"):
        title += ", discovery may also read " + " and ".join(extras[e] for e in s["extra_terminals"])
    title += ", expressions may combine whole-network values" if s.get("network_ops") else ""
    if (seeds := s.get("split_seeds")) and seeds[0] != s["seed"]:
        title += f", fresh splits (seeds {seeds[0]}–{seeds[-1]}) that chose nothing"
    gts = [r["groundtruth"]] if isinstance(r["groundtruth"], str) else r["groundtruth"]  # older results: one file
    files = ", ".join(f"`{Path(p).name}`" for p in gts)
    extra = r.get("extra_train") or {}
    extra_n = extra.get("networks", 0)
    extra_text = (f", and {extra_n} more networks trained {extra['training_runs_per_network']}x, from "
                  f"{', '.join(f'`{Path(p).name}`' for p in extra['files'])}, which are never held out" if extra_n else "")
    lines = [f"### Zero-cost proxies vs CamVid mIoU (`benchmarks/proxies_camvid.py`{title})", "",
             f"Ground truth {files}.",
             f"Held-out split: {r['splits'][0]['held_out_size']} of the {r['networks']} ground-truth networks "
             f"(discovery saw the other {r['splits'][0]['train_size'] - extra_n}{extra_text}); each proxy on {s['images']} CamVid images at "
             f"{s['size'][0]}x{s['size'][1]}, untrained networks, seed {s['seed']}.", "",
             f"| proxy | Kendall τ | Spearman ρ | τ mean ± std over {s['splits']} splits | s / network |",
             "|---|---|---|---|---|"]
    members = s.get("members", 1)
    for row in sorted(r["table"], key=lambda x: -x["held_out_tau"]):
        name = {"discovered": f"**discovered{f', ensemble of {members}' if members > 1 else ''}**",
                "discovered_single": "discovered, one expression (member 0)",
                "selected_classic": "classic chosen on the training split, signed"}.get(row["proxy"], row["proxy"])
        if row["proxy"] == "selected_classic":
            picks = ", ".join(f"{'−' if sp['selected_classic']['sign'] < 0 else ''}{sp['selected_classic']['proxy']}"
                              for sp in r["splits"])
            name += f" ({picks})"
        secs = f"{row['seconds_per_net']:.2f}" if row.get("seconds_per_net") is not None else "–"
        lines.append(f"| {name} | {row['held_out_tau']:+.3f} | {row['held_out_rho']:+.3f} | "
                     f"{row['mean_tau_over_splits']:+.3f} ± {row['std_tau_over_splits']:.3f} | {secs} |")
    g = r["goal"]
    disc_mean = next(row["mean_tau_over_splits"] for row in r["table"] if row["proxy"] == "discovered")
    split_mean_met = g.get("met_on_split_mean", g["mean_margin_over_splits"] >= 0.1 and disc_mean >= 0.5)
    met_splits = sum(sp["held_out"]["discovered"]["kendall_tau"] >= 0.5
                     and sp["held_out"]["discovered"]["kendall_tau"] - sp["held_out"][sp["best_classic"]]["kendall_tau"] >= 0.1
                     for sp in r["splits"])
    cv = ""
    if s.get("cv_folds"):
        chosen = [sp["cross_validation"]["chosen"]["parsimony"] for sp in r["splits"]]
        cv = (f"; size penalty (parsimony) chosen per split by {s['cv_folds']}-fold cross-validation on its training "
              f"networks only, from {[c['settings']['parsimony'] for c in r['splits'][0]['cross_validation']['candidates']]}: "
              f"chose {chosen}")
    ensemble = ""
    if members > 1:
        taus = "; ".join(" ".join(f"{m['held_out_tau']:+.2f}" for m in sp["members"]) for sp in r["splits"])
        ensemble = (f"; {members} expressions evolved per split with other seeds and averaged on their quantile "
                    f"scales (`segnas.proxies.ensemble`); the members alone reach held-out τ {taus} (split by split)")
    lines += ["", f"Discovered on split 0 (DEAP genetic programming, population {s['population']}, "
              f"{s['generations']} generations{cv}{ensemble}): `{r['discovered']['expression']}`. Margin over the best classic "
              f"proxy ({g['best_classic']}): {g['margin_over_best_classic']:+.3f} τ on split 0, "
              f"{g['mean_margin_over_splits']:+.3f} on average over the splits (each split's own discovery against "
              f"its own best classic proxy)"
              + (f"; over the classic proxy chosen, with its sign, on each split's training networks: "
                 f"{g['mean_margin_over_selected_classic']:+.3f} on average" if "mean_margin_over_selected_classic" in g
                 else "") + f". Goal (margin ≥ 0.1 and τ ≥ 0.5): **{'met' if g['met'] else 'not met'}** on split 0, "
              f"**{'met' if split_mean_met else 'not met'}** on the mean over the splits (τ {disc_mean:+.3f}, margin "
              f"{g['mean_margin_over_splits']:+.3f}), on {met_splits} of the {len(r['splits'])} splits one by one. "
              "s / network for `discovered` is its per-layer statistics. " + machine_line(r), "",
              f"![proxies vs mIoU](benchmarks/results/{r['plot']})", ""]
    return lines


#: One-expression discoveries on the 7-seed ground truth (2 initializations, evolved on them), the
#: grammar or training data changed one at a time; member 0 of the 5-member runs is one such run.
PROXY_VARIANTS = (
    ("proxies_camvid_steps300_7seeds_2inits_evolved", "W, G, A, nW, nA (member 0 of the 5-member run)"),
    ("proxies_camvid_steps300_7seeds_2inits_evolved_extra212", "the same, with 212 once-trained networks added to training"),
    ("proxies_camvid_steps300_7seeds_2inits_evolved_ga_m1", "+ GA (activation gradients)"),
    ("proxies_camvid_steps300_7seeds_2inits_evolved_r_m1", "+ R (layer resolution)"),
    ("proxies_camvid_steps300_7seeds_2inits_evolved_ops_m1", "+ network ops"),
    ("proxies_camvid_steps300_7seeds_2inits_evolved_r_ops", "+ R + network ops (member 0 of the 5-member run)"),
)


def proxy_variants() -> list[str]:
    """One row per variant: held-out τ of one discovered expression on each split, their mean, and
    the mean margin over each split's best classic proxy."""
    rows = []
    for name, label in PROXY_VARIANTS:
        if (r := load(name)) is None:
            continue
        single = "discovered_single" if r["settings"].get("members", 1) > 1 else "discovered"
        classic = [n for n in r["splits"][0]["held_out"] if n not in ("discovered", "discovered_single", "selected_classic")]
        taus = [sp["held_out"][single]["kendall_tau"] for sp in r["splits"]]
        margins = [t - max(sp["held_out"][n]["kendall_tau"] for n in classic) for t, sp in zip(taus, r["splits"])]
        rows.append(f"| {label} | {' / '.join(f'{t:+.3f}' for t in taus)} | {sum(taus) / len(taus):+.3f} | "
                    f"{sum(margins) / len(margins):+.3f} | `{name}.json` |")
    if not rows:
        return []
    return ["### Proxy discovery variants (`benchmarks/proxies_camvid.py`, one expression per split)", "",
            "7-seed ground truth (120 networks, the same 5 splits of 60 held-out networks), every proxy averaged over 2 "
            "weight initializations, discovery evolved on them (population 64, 30 generations, the same evolution "
            "seeds); each row changes what the expressions may read or combine.", "",
            "| terminals and operations | held-out τ, splits 0–4 | mean τ | mean margin over the best classic |"
            " result |", "|---|---|---|---|---|"] + rows + [""]


def proxy_summary() -> list[str]:
    """One line per `proxies_camvid*` result, oldest first: what discovery saw and how the discovered
    proxy fared over the splits against the classic proxies."""
    rows = []
    pools: dict[str, list] = {}  # runs that differ only in their split seeds -> (name, split seeds, splits)
    results = sorted(((path, json.loads(path.read_text())) for path in RESULTS.glob("proxies_camvid*.json")),
                     key=lambda pr: pr[1]["date"])
    for path, r in results:
        s = r["settings"]
        seeds = s.get("split_seeds") or [s["seed"] + k for k in range(s["splits"])]
        config = json.dumps([r["groundtruth"], r.get("extra_train"), {k: v for k, v in s.items() if k not in (
            "split_seeds", "workers") and not (k == "bag_fraction" and v == 1.0)}], sort_keys=True)
        pools.setdefault(config, []).append((path.stem, seeds, r["splits"]))
        gts = [r["groundtruth"]] if isinstance(r["groundtruth"], str) else r["groundtruth"]
        budget = "300 steps" if "steps300" in gts[0] else "2 CPU-min"
        reads = " + ".join(list(s.get("extra_terminals") or []) + (["network ops"] if s.get("network_ops") else []))
        table = {row["proxy"]: row for row in r["table"]}
        disc = table["discovered"]
        classic = [n for n in table if n not in ("discovered", "discovered_single", "selected_classic")]
        top = max(classic, key=lambda n: table[n]["mean_tau_over_splits"])
        met = sum(map(split_meets_goal, r["splits"]))
        g = r["goal"]
        bag = f", each on {100 * s['bag_fraction']:.0f}% (bagged)" if s.get("bag_fraction", 1.0) < 1.0 else ""
        selected = f"{g['mean_margin_over_selected_classic']:+.3f}" if "mean_margin_over_selected_classic" in g else "–"
        rows.append(f"| `{path.stem}` | {budget} × {r.get('training_runs_per_network', 1)} | {s.get('inits', 1)} | "
                    f"{s.get('members', 1)}{bag} | {reads or '–'} | {seeds[0]}–{seeds[-1]} | "
                    f"{disc['mean_tau_over_splits']:+.3f} ± {disc['std_tau_over_splits']:.3f} | "
                    f"{top} {table[top]['mean_tau_over_splits']:+.3f} | {g['mean_margin_over_splits']:+.3f} | "
                    f"{selected} | {met} / {len(r['splits'])} |")
    if not rows:
        return []
    return ["### Proxy discovery runs at a glance (`benchmarks/proxies_camvid.py`; details in the sections below)", "",
            "Held-out Kendall τ averaged over each run's splits. Margin: the discovered proxy's τ minus that of the "
            "classic proxy best on the same held-out networks (an oracle choice), or minus the classic proxy chosen, "
            "with its sign, on the split's training networks. Goal per split: τ ≥ 0.5 and oracle margin ≥ 0.1.", "",
            "| result | ground truth × seeds | inits | members | extra reads | split seeds | discovered τ | "
            "best classic τ | margin (oracle) | margin (chosen on train) | goal met |",
            "|---|---|---|---|---|---|---|---|---|---|---|"] + rows + [""] + pooled_splits(pools)


def oracle_margin(split: dict) -> float:
    """A split's held-out τ of the discovered proxy minus that of the classic proxy best there."""
    return split["held_out"]["discovered"]["kendall_tau"] - split["held_out"][split["best_classic"]]["kendall_tau"]


def split_meets_goal(split: dict) -> bool:
    """#6's goal on one split: held-out τ ≥ 0.5 and a margin ≥ 0.1 over the best classic proxy."""
    return split["held_out"]["discovered"]["kendall_tau"] >= 0.5 and oracle_margin(split) >= 0.1


def pooled_splits(pools: dict[str, list]) -> list[str]:
    """Per-split figures pooled over runs with the same settings on different (disjoint) split seeds."""
    lines = []
    for runs in pools.values():
        seeds = [seed for _, ss, _ in runs for seed in ss]
        if len(runs) < 2 or len(seeds) != len(set(seeds)):
            continue
        splits = [sp for _, _, sps in runs for sp in sps]
        tau = [sp["held_out"]["discovered"]["kendall_tau"] for sp in splits]
        chosen = [t - sp["held_out"]["selected_classic"]["kendall_tau"] for t, sp in zip(tau, splits)
                  if "selected_classic" in sp["held_out"]]
        lines.append(f"| {' + '.join(f'`{name}`' for name, _, _ in runs)} | {len(splits)} | "
                     f"{statistics.mean(tau):+.3f} ± {statistics.pstdev(tau):.3f} | "
                     f"{statistics.mean(map(oracle_margin, splits)):+.3f} | "
                     f"{f'{statistics.mean(chosen):+.3f}' if chosen else '–'} | "
                     f"{sum(map(split_meets_goal, splits))} / {len(splits)} |")
    if not lines:
        return []
    return ["Pooled over runs with the same settings on different split seeds (every split counts once):", "",
            "| runs | splits | discovered τ | margin (oracle) | margin (chosen on train) | goal met |",
            "|---|---|---|---|---|---|"] + lines + [""]


def proxy_null(r: dict) -> list[str]:
    s, t, h = r["settings"], r["train_tau"], r["held_out_tau"]
    return [f"**Discovery against a null** (`benchmarks/proxy_discovery_null.py`, {r['networks']} networks, "
            f"ground truth {', '.join(f'`{Path(p).name}`' for p in r['groundtruth'])}): on {s['splits']} splits, discovery on "
            f"the real mIoU reaches train τ {t['real_mean']:+.3f} ± {t['real_std']:.3f} (held-out {h['real_mean']:+.3f}); "
            f"on the same networks with their mIoU shuffled ({s['shuffles']} per split), where there is nothing to find, "
            f"it reaches train τ {t['shuffled_mean']:+.3f} ± {t['shuffled_std']:.3f} (best {t['shuffled_max']:+.3f}; "
            f"held-out {h['shuffled_mean']:+.3f}). " + machine_line(r), ""]


# SasWOT search results in README order: the first proxy's, then the R + network-ops proxy's at the
# proxy file's 4 initializations per candidate and at 1 (the 10 best rescored at 4)
SASWOT_RESULTS = ("saswot_camvid", "saswot_camvid_steps300", "saswot_camvid_steps300_r_ops",
                  "saswot_camvid_steps300_r_ops_inits1")


def saswot(r: dict) -> list[str]:
    s = r["search"]
    inits = s["settings"].get("inits", 1)
    stop = (f"its {s['settings']['time_limit_s'] / 60:g}-minute time limit" if s["stopped"] == "time"
            else "the candidate count")
    final = (f" The {s['settings']['top_k']} best were scored again over {s['final_inits']} initializations "
             f"({s['final_seconds']:.0f} s) and the best of them by that won." if s.get("final_inits") else "")
    lines = [f"### SasWOT training-free search on CamVid (`benchmarks/saswot_camvid.py`, {r['target_ms']:g} ms target, "
             f"`{r['benchmark']}`)",
             "", f"Proxy `{Path(r['proxy']).name}`, each candidate at {inits} weight initialization"
             f"{'s' if inits > 1 else ''}; {s['candidates_scored']} candidates scored in "
             f"{s['seconds'] / 60:.1f} min ({s['candidates_per_minute']:.0f} per minute, {s['settings']['workers']} "
             f"processes; {s['rejected_infeasible']} proposals rejected by the latency predictor first; stopped by "
             f"{stop}).{final} Winner: predicted {r['winner_predicted_ms']:.1f} ms, measured "
             f"**{r['winner_measured_ms']:.1f} ms** against the {r['target_ms']:g} ms target "
             f"({100 * r['winner_vs_target']:+.0f}%), {r['winner_params'] / 1e6:.2f}M parameters, "
             f"{r['winner_gflops']:.2f} GFLOPs."]
    if (g := r.get("groundtruth_budget")) and g.get("feasible_networks"):
        lines.append(f"Trained under the ground truth's {g['minutes']:g}-minute budget it reaches "
                     f"{100 * g['val_miou']:.1f}%: the ground truth's {g['feasible_networks']} networks within the "
                     f"target have median {100 * g['feasible_median_miou']:.1f}% and best "
                     f"{100 * g['feasible_best_miou']:.1f}% (winner at percentile {g['winner_percentile']:.0f}).")
    if (g := r.get("groundtruth_steps")) and g.get("feasible_networks"):
        runs = " / ".join(f"{100 * m:.1f}" for m in g["val_miou_runs"])
        lines.append(f"Trained {g['steps']} steps with each of the step-budget ground truth's {len(g['files'])} "
                     f"training seeds it reaches {100 * g['val_miou']:.1f}% on average ({runs}): the ground truth's "
                     f"{g['feasible_networks']} networks predicted within the target on this machine have seed-mean "
                     f"median {100 * g['feasible_median_miou']:.1f}% and best {100 * g['feasible_best_miou']:.1f}% "
                     f"(winner at percentile **{g['winner_percentile']:.0f}**).")
    if r.get("training"):
        lines.append(f"Trained {r['training']['train_minutes']:.0f} CPU-minutes with `train_camvid.py`'s recipe: "
                     f"val mIoU **{100 * r['training']['final_val_miou']:.1f}%** (same-budget table below).")
    return lines + [machine_line(r), ""]


def same_budget(minutes: float = 10.0) -> list[str]:
    """Every network trained with train_camvid.py's recipe for ``minutes`` CPU-minutes, by CPU (a
    CPU-time budget buys different training on another CPU) and latency."""
    rows = []  # (CPU, latency ms or None, name, source, params, val mIoU)
    cpus = sorted({json.loads(f.read_text())["machine"]["cpu"] for f in RESULTS.glob("train_camvid*.json")})
    for cpu in cpus:
        for m, b in baselines(minutes, cpu).items():
            rows.append((cpu, b["latency_ms"], m, "zoo", b["params"], b["val_miou"]))
    for mode in ("decoupled", "coupled"):
        r = load(f"fasterseg_camvid_{mode}")
        if r and r.get("student_val_miou") is not None:
            ms = r.get("student_remeasured_ms", r["student_measured_ms"])
            cpu = r["machine"]["cpu"]
            rows.append((cpu, ms, f"FasterSeg student ({mode}, {r['target_ms']:.0f} ms target)", "search",
                         r["student_params"], r["student_val_miou"]))
            rows.append((cpu, None, f"FasterSeg teacher ({mode})", "search", r["teacher_params"], r["teacher_val_miou"]))
    r = load("ssr_camvid")
    if r and r.get("training"):
        run = r["runs"]["ssr"]
        rows.append((r["machine"]["cpu"], run["measured_ms"], f"SSR network ({r['target_ms']} ms target)", "search",
                     run["params"], r["training"]["final_val_miou"]))
    for name in SASWOT_RESULTS:
        r = load(name)
        if r and r.get("training"):
            rows.append((r["machine"]["cpu"], r["winner_measured_ms"],
                         f"SasWOT winner ({r['target_ms']} ms target, `{Path(r['proxy']).name}`)", "search",
                         r["winner_params"], r["training"]["final_val_miou"]))
    if not rows:
        return []
    rows.sort(key=lambda x: (x[0], x[1] is None, x[1] or 0.0))
    lines = [f"### Same training budget on CamVid: {minutes:.0f} CPU-minutes each (`train_camvid.py`'s recipe)", "",
             "| CPU | network | from | latency ms (ONNX Runtime, 360x480, 2 threads) | params | val mIoU |",
             "|---|---|---|---|---|---|"]
    for cpu, ms, name, src, params, miou in rows:
        lat = f"{ms:.1f}" if ms is not None else "–"
        par = f"{params / 1e6:.2f}M" if params else "–"
        lines.append(f"| {cpu} | {name} | {src} | {lat} | {par} | {100 * miou:.1f}% |")
    lines += ["", "Rows compare within one CPU: the budget is CPU time, which buys less training on a slower CPU. "
              "Latencies were measured on the row's CPU: zoo latencies from the zoo table (19-class heads) or "
              "`train_camvid.py --time-only`, searched networks by their benchmark with CamVid's 11 classes. "
              "Teachers are not meant to be fast and were not timed. Training time is process CPU time ÷ 2 threads, "
              "one run at a time (oversubscribed threads spin CPU time away).", ""]
    return lines


def train_step_precision(results: list[dict]) -> list[str]:
    """One table over every CPU that ran benchmarks/train_step_precision.py."""
    lines = ["### Training step: fp32 vs bf16 autocast, NCHW vs channels-last (`benchmarks/train_step_precision.py`)", "",
             "| CPU | native bf16 | fp32 NCHW | fp32 channels-last | bf16 NCHW | bf16 channels-last | bf16 speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        ms = {(row["precision"], row["channels_last"]): row["ms_per_step"] for row in r["rows"]}
        cells = " | ".join(f"{ms[(p, cl)]:.0f} ms" for p in ("fp32", "bf16") for cl in (False, True))
        lines.append(f"| {r['machine']['cpu']} | {'yes' if r['native_bf16'] else 'no'} | {cells} | "
                     f"{r['bf16_speedup']:.2f}x |")
    r = results[0]
    return lines + ["", f"One SGD step of `{r['model']}` at {r['size'][0]}x{r['size'][1]}, batch {r['batch']}, "
                    f"{r['threads']} threads, median of {r['steps']} steps. Where the CPU has no native bf16 the "
                    "trainer uses fp32 instead (`usable_bf16`). *" + "; ".join(
                        f"{x['machine']['cpu']}: {x['date']}, {x['machine']['cores']} cores, torch {x['machine']['torch']}"
                        for x in results) + ".*", ""]


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
    runs = {m: r for m in ("decoupled", "coupled") if (r := load(f"fasterseg_camvid_{m}")) is not None}
    if runs:
        sections += fasterseg(runs)
    if (r := load("ssr_camvid")) is not None:
        sections += ssr(r)
    if (r := load("joint_latency_error")) is not None:
        sections += joint_latency(r)
    sections += proxy_summary()
    for name, fn in (("proxy_groundtruth", proxy_groundtruth), ("proxies_camvid", proxies),
                     ("proxies_camvid_2seeds", proxies), ("proxy_discovery_null", proxy_null),
                     ("proxy_groundtruth_steps300", proxy_groundtruth), ("proxies_camvid_steps300", proxies),
                     ("proxies_camvid_steps300_cv", proxies), ("proxies_camvid_steps300_2seeds", proxies),
                     ("proxies_camvid_steps300_3seeds", proxies), ("proxies_camvid_steps300_5seeds", proxies),
                     ("proxies_camvid_steps300_5seeds_2inits", proxies), ("proxies_camvid_steps300_5seeds_2inits_evolved", proxies),
                     ("proxy_discovery_null_steps300", proxy_null), ("proxy_discovery_null_steps300_2seeds", proxy_null),
                     ("proxy_discovery_null_steps300_3seeds", proxy_null), ("proxy_discovery_null_steps300_7seeds", proxy_null),
                     ("proxies_camvid_steps300_7seeds_2inits_evolved", proxies),
                     ("proxies_camvid_steps300_7seeds_4inits_evolved", proxies),
                     ("proxies_camvid_steps300_7seeds_2inits_evolved_extra212", proxies),
                     ("proxies_camvid_steps300_7seeds_2inits_evolved_r_ops", proxies),
                     ("proxies_camvid_steps300_7seeds_4inits_evolved_r_ops", proxies),
                     ("proxies_camvid_steps300_7seeds_4inits_evolved_r_ops_splits100", proxies),
                     *((name, saswot) for name in SASWOT_RESULTS)):
        if (r := load(name)) is not None:
            sections += fn(r)
        if name == "proxies_camvid_steps300_7seeds_2inits_evolved_r_ops":
            sections += proxy_variants()
    sections += same_budget()
    precision = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("train_step_precision_*.json"))]
    if precision:
        sections += train_step_precision(precision)
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + "\n".join(sections) + END + tail)
    print(f"updated {readme} with {len(sections)} lines")


if __name__ == "__main__":
    main()
