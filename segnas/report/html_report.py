"""The HTML report of a run directory (train, search or compare): summary, settings, curves, Pareto
plot, architecture diagram, sample predictions and per-operator latency, in one self-contained page.

This module only renders: what needs the layers above it (a trained network's predictions) or a
latency table comes in through ``ReportInputs`` (``segnas.jobs.report`` builds it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from segnas.report.arch_draw import arch_decisions, draw_architecture
from segnas.report.breakdown import LatencyBreakdown
from segnas.report.compare_md import hours, train_hours
from segnas.report.draw import prediction_strip
from segnas.report.html import HtmlDocument, rgb_png
from segnas.config.compare import TARGET_TOLERANCE
from segnas.report.format import is_number, num, pct, signed_pct
from segnas.report.pareto import pareto_figure, pareto_front, plottable
from segnas.report.plots import candidates_figure, latency_by_op_figure, search_curves_figure, training_curve_figure
from segnas.report.runfiles import NOTE_PREFIX, RunFiles, found_network
from segnas.report.verdict import compare_verdict, search_verdict, within_budget
from segnas.utils import read_json

#: Sections in page order: anchor -> title.
SECTIONS = {"summary": "Summary", "settings": "Settings", "curves": "Curves", "pareto": "Pareto front",
            "architecture": "Architecture", "samples": "Sample predictions", "latency": "Latency breakdown"}
#: Operators listed one by one in the latency table (the rest are summed in one row).
TOP_OPS = 25


@dataclass
class Sample:
    """One validation image with its ground truth (None when unlabelled) and the predicted classes
    (``preds``: by network; one entry for a training or a search, one per network compared)."""

    name: str
    image: np.ndarray
    truth: np.ndarray | None
    preds: dict[str, np.ndarray]


@dataclass
class SampleSet:
    samples: list[Sample]
    palette: np.ndarray
    class_names: list[str]
    source: str


@dataclass
class ReportInputs:
    """What the report needs beyond the run's files: sample predictions, latency breakdowns (by
    network name), class names, and notes (by section anchor) on why a part is absent."""

    samples: SampleSet | None = None
    #: Arch-file mappings to draw by name (None: ``architectures(run)``, read from the run's files).
    archs: dict[str, dict[str, Any]] | None = None
    latency: dict[str, LatencyBreakdown] = field(default_factory=dict)
    class_names: list[str] | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    #: the parameter count of the network whose checkpoint the page shows (a training's)
    params: int | None = None


def _num(v: Any, fmt: str = ".2f") -> str:
    """``format.num`` for numbers; any other value (a method's text figure, a flag) as its text."""
    return num(v, fmt) if is_number(v) or v is None else str(v)


def _millions(v: Any) -> str:
    return f"{v / 1e6:.3f} M" if is_number(v) else "-"


def build_report(run: RunFiles, inputs: ReportInputs | None = None) -> HtmlDocument:
    """The report page of ``run``."""
    inputs = inputs or ReportInputs()
    doc = HtmlDocument(page_title(run), f"{run.path.resolve()} · written {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for anchor, title in SECTIONS.items():
        if anchor == "pareto" and run.kind != "comparison":
            continue
        doc.section(title, anchor)
        SECTION_WRITERS[anchor](doc, run, inputs)
        for note in inputs.notes.get(anchor, []):
            doc.note(note)
    return doc


def page_title(run: RunFiles) -> str:
    """What the run is, in the page's title: the method and space, data and target; the run's folder."""
    data = (run.config.get("data") or {}).get("name") or ((run.compare or {}).get("settings") or {}).get(
        "data", {}).get("name", "?")
    at = f", target {_num(run.target_ms, '.4g')} ms" if is_number(run.target_ms) else ""
    if run.kind == "comparison":
        what = f"Comparison on {data}{at}"
    elif run.kind == "search":
        res = run.search_result or {}
        space = f" / {res['space']}" if res.get("space") else ""
        what = f"Search: {run.config.get('method', '?')}{space} on {data}{at}"
    else:
        model = run.config.get("model") or {}
        net = Path(model["arch"]).stem if model.get("arch") else model.get("name") or "?"
        what = f"Training: {net} on {data}"
    return f"{what} ({run.name})"


def write_report(run: RunFiles, out: str | Path, inputs: ReportInputs | None = None) -> Path:
    """Render the report of ``run`` and write it atomically to ``out``."""
    return build_report(run, inputs).write(out)


# ------------------------------------------------------------------------------------ summary
def summary_notes(run: RunFiles) -> list[str]:
    """The notes and warnings of a run's log, then a comparison's notes its log does not hold (it
    logs most of them as it says them), each once."""
    logged = {NOTE_PREFIX.sub("", n) for n in run.notes}
    return run.notes + [f"note: {n}" for n in (run.compare or {}).get("notes", []) if n not in logged]


def _summary(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    res = run.search_result or {}
    found = found_network(res)
    if found is not None:
        doc.verdict(*search_verdict(*found, res.get("target_ms")))
    elif run.compare:
        doc.verdict(*compare_verdict(run.compare))
    for note in summary_notes(run):
        doc.note(note)
    if run.kind == "training":
        _train_summary(doc, run, inputs.class_names, inputs.params)
    elif run.kind == "search":
        _search_summary(doc, run)
    else:
        _compare_summary(doc, run)


def _train_summary(doc: HtmlDocument, run: RunFiles, class_names: list[str] | None, params: int | None) -> None:
    evals = [r for r in run.metrics if isinstance(r.get("val_miou"), (int, float))]
    model = run.config.get("model") or {}
    data = run.config.get("data") or {}
    base = data.get("base_size")
    scored_at = "at " + "x".join(map(str, base)) if base else "at each image's own size"
    options = ", ".join(f"{k}={v}" for k, v in (data.get("options") or {}).items())
    last = run.metrics[-1] if run.metrics else {}
    planned = [f"{run.config['max_steps']} steps" if run.config.get("max_steps") else "",
               f"{run.config['epochs']} epochs" if run.config.get("epochs") else "",
               f"{run.config['time_budget_min']:g} min" if run.config.get("time_budget_min") else ""]
    rows = [("network", f"arch file {model['arch']}" if model.get("arch") else f"zoo: {model.get('name')}"),
            ("parameters", _millions(params)),
            ("dataset", f"{data.get('name')}{f' ({options})' if options else ''} "
                        f"({data.get('val_split', 'val')} split scored {scored_at})"),
            ("epochs / steps", f"{last.get('epoch', '-')} / {last.get('step', '-')}" if last
             else "no epoch finished yet"),
            ("budget", " or ".join(p for p in planned if p)
             + " (whichever ends first)" * (sum(map(bool, planned)) > 1))]
    if not training_ended(run.config, last):
        doc.note(f"The training has not ended ({last.get('step', 0)} steps of its budget done): it was stopped (its "
                 "log.txt says why when it failed), or is still running; the command that started it continues it "
                 "with --resume.")
    # the evaluation best.pt was saved at (the first of equals, as the trainer keeps it)
    best = max(evals, key=lambda r: r["val_miou"]) if evals else {}
    if evals:
        rows += [("best val mIoU", f"{pct(best['val_miou'], unit='%')} (epoch {best.get('epoch')})"),
                 ("its pixel accuracy / mean accuracy", f"{pct(best.get('val_pixel_acc'), unit='%')} / "
                                                        f"{pct(best.get('val_mean_acc'), unit='%')}"),
                 ("last val mIoU", pct(evals[-1]["val_miou"], unit="%"))]
    if run.metrics and "train_s" in run.metrics[-1]:
        rows.append(("training time", f"{run.metrics[-1]['train_s']:.1f} s"))
    doc.table(("quantity", "value"), rows)
    if best.get("val_iou"):  # best.pt's: the checkpoint whose predictions the page shows
        ious = best["val_iou"]
        names = class_names if class_names and len(class_names) == len(ious) else [str(i) for i in range(len(ious))]
        doc.heading(f"Per-class IoU (best evaluation, epoch {best.get('epoch')})")
        doc.table(("class", "IoU"), [(n, pct(v, unit="%")) for n, v in zip(names, ious)], numeric=(False, True))


def training_ended(config: dict[str, Any], last: dict[str, Any]) -> bool:
    """Whether a training ended: its last metrics record says so (``finished``), or, in a run an earlier
    segnas wrote, reaches its budget of steps or epochs (one of time was not told: taken as ended)."""
    if "finished" in last:
        return bool(last["finished"])
    steps, epochs = config.get("max_steps"), config.get("epochs")
    if config.get("time_budget_min") or (steps is None and epochs is None):
        return True
    return bool((steps and last.get("step", 0) >= steps) or (epochs and last.get("epoch", 0) >= epochs))


def _search_summary(doc: HtmlDocument, run: RunFiles) -> None:
    res = run.search_result
    method = run.config.get("method", "?")
    if res is None:
        doc.note("The search has not finished (no search_result.json): what it has written so far is shown.")
        progress = ([("candidates evaluated", len(run.candidates))] if run.candidates else []) + \
            ([("epochs logged", len(run.metrics))] if run.metrics or not run.candidates else [])
        doc.table(("quantity", "value"), [("method", method), *progress])
        return
    size = "x".join(str(s) for s in res.get("size", []))
    threads = f"{res.get('threads')} thread{'s' * (res.get('threads') != 1)}"
    doc.table(("quantity", "value"), [
        ("method / space", f"{res.get('method')} / {res.get('space')}"),
        ("latency target", f"{_num(res.get('target_ms'), '.4g')} ms at {size} ({res.get('backend')}, {threads})"
                           if res.get("target_ms") else "none"),
        ("search time", f"{_num(res.get('search_wall_seconds'), '.1f')} s wall, "
                        f"{_num(res.get('search_cpu_seconds'), '.1f')} s CPU"
                        + (" (killed and resumed: summed over its processes)" if res.get("resumed") else "")
                        + "; not counted: timing this machine's latency table and correction (kept for later "
                          "searches) and the final training"),
        *[(f"final training of {n}", f"{_num(t['train_seconds'], '.0f')} s, {t.get('steps')} steps")
          for n, net in (res.get("networks") or {}).items()
          if is_number((t := (net or {}).get("training") or {}).get("train_seconds"))],
    ])
    rows = []
    for name, net in (res.get("networks") or {}).items():
        training = net.get("training") or {}
        vs = net.get("latency_vs_target")
        rows.append((name, net.get("role"), predicted(net), _num(net.get("measured_ms")),
                     signed_pct(vs),
                     _millions(net.get("params")), _num(net.get("gflops"), ".3f"),
                     pct(training.get("best_val_miou"), unit="%") if training else "not trained"))
    doc.heading("Found networks")
    doc.table(("network", "role", "predicted ms (table → corrected)", "measured ms (quietest round)", "vs target",
               "params", "GFLOPs", "best val mIoU"),
              rows, numeric=(False, False, True, True, True, True, True, True))
    details = {k: v for k, v in (res.get("details") or {}).items()
               if not isinstance(v, (list, dict)) and v is not None}
    if details:
        doc.heading(f"{res.get('method')} details")
        doc.table(("figure", "value"), [(k.replace("_", " "), _num(v, ".4g")) for k, v in details.items()])


def predicted(net: dict[str, Any]) -> str:
    """A found network's predicted latency: the table's, then the corrected one where a correction applied."""
    table, best = net.get("predicted_table_ms"), net.get("predicted_ms")
    if is_number(table) and is_number(best) and round(table, 2) != round(best, 2):
        return f"{_num(table)} → {_num(best)}"
    return _num(best) if is_number(best) else "-"


def _compare_summary(doc: HtmlDocument, run: RunFiles) -> None:
    cmp = run.compare or {}
    doc.text(f"Latency target {_num(cmp.get('target_ms'), '.4g')} ms; latency measured on {cmp.get('latency', '?')}; "
             f"total compute {_num(cmp.get('total_cpu_hours'), '.2f')} CPU-hours.")
    if (devices := cmp.get("train_devices") or ["cpu"]) != ["cpu"]:
        doc.text(f"Final trainings ran on: {', '.join(devices)} (same optimizer steps and recipe everywhere).")
    rows = []
    for r in cmp.get("rows", []):
        std = r.get("val_miou_std")
        val = pct(r.get("val_miou_mean"), std, "%")
        vs, at_search = r.get("latency_vs_target"), r.get("search_measured_ms")
        rows.append((r.get("name"), r.get("kind"), r.get("status"), val, pct(r.get("test_miou_mean"), unit="%"),
                     _num(r.get("latency_ms")), signed_pct(vs),
                     _num(at_search) if isinstance(at_search, (int, float)) else "-",
                     _millions(r.get("params")), _num(r.get("gflops"), ".3f"),
                     f"{hours(r.get('search_cpu_seconds'))} / "
                     f"{train_hours(r.get('train_cpu_seconds'), r.get('train_gpu_seconds'))}",
                     len(r.get("seeds") or [])))
    rows = [(*row[:7], {True: "yes", False: "no", None: "-"}[within_budget(r)], predicted(r), *row[7:])
            for row, r in zip(rows, cmp.get("rows", []))]
    doc.table(("network", "kind", "status", "val mIoU (mean ± std)", f"{cmp.get('test_split') or 'test'} mIoU",
               "latency ms", "vs target",
               f"within budget (+{100 * TARGET_TOLERANCE:.0f}%)", "predicted ms (table → corrected)",
               "at its search ms", "params", "GFLOPs", "search / train CPU-h", "seeds"), rows,
              numeric=(False, False, False, True, True, True, True, False, True, True, True, True, True, True))
    doc.text("latency ms: measured in the comparison's one interleaved session; predicted ms: what the search "
             "predicted for its network (the operator table, then its learned correction); at its search ms: a "
             "found network measured at the end of its search, on the machine its latency table was made on (its "
             f"status says whether it landed within ±{100 * TARGET_TOLERANCE:.0f}% of the target there).")
    rows = cmp.get("rows", [])
    val = _per_class_table(doc, "Per-class IoU (mean over seeds)", {str(r.get("name")): class_means(r) for r in rows})
    unlearned = [c for c, ious in val.items() if ious and all(v == 0 for v in ious)]
    if unlearned:
        doc.text(f"IoU 0 for every network: {', '.join(unlearned)} (no network segments "
                 f"{'it' if len(unlearned) == 1 else 'them'} under this training budget).")
    _per_class_table(doc, f"Per-class {cmp.get('test_split') or 'test'} IoU (mean over seeds)",
                     {str(r.get("name")): r.get("test_per_class_iou") for r in rows})


def _per_class_table(doc: HtmlDocument, heading: str, per_network: dict[str, Any]) -> dict[str, list[Any]]:
    """A table of classes by network (those with per-class IoUs, a mapping), under ``heading``;
    returns each class's IoUs (nothing when no network has any)."""
    nets = {n: ious for n, ious in per_network.items() if isinstance(ious, dict) and ious}
    classes = {c: [ious.get(c) for ious in nets.values()] for c in dict.fromkeys(c for ious in nets.values()
                                                                                     for c in ious)}
    if classes:
        doc.heading(heading)
        doc.table(["class", *nets], [[c, *(pct(v, unit="%") for v in ious)] for c, ious in classes.items()],
                  numeric=[False] + [True] * len(nets))
    return classes


def class_means(row: dict[str, Any]) -> dict[str, float | None]:
    """Per-class IoU of a comparison row: its own ``per_class_iou`` (the mean over seeds), else the
    mean of its seeds' (values that are not numbers, e.g. a class absent from the split, are skipped)."""
    if isinstance(row.get("per_class_iou"), dict) and row["per_class_iou"]:
        return dict(row["per_class_iou"])
    per = [s.get("per_class_iou") or {} for s in row.get("seeds") or []]
    out: dict[str, float | None] = {}
    for c in dict.fromkeys(c for p in per for c in p):
        values = [p[c] for p in per if isinstance(p.get(c), (int, float))]
        out[c] = float(np.mean(values)) if values else None
    return out


# ------------------------------------------------------------------------------------ settings
def _settings(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    if run.config_text:
        doc.pre(run.config_text, collapsed="config.yaml of the run")
    elif run.kind == "comparison" and (run.compare or {}).get("settings"):
        doc.pre(yaml.safe_dump(run.compare["settings"], sort_keys=False), collapsed="settings recorded in compare.json")
    else:
        doc.note("No settings recorded (no config.yaml).")


# ------------------------------------------------------------------------------------ curves
def _curves(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    shown = False
    if run.kind == "training":
        if run.metrics:
            _training_curve(doc, run.metrics, "training curve", "training loss and val mIoU per epoch")
            shown = True
    elif run.kind == "search":
        fig = search_curves_figure(run.metrics) if run.metrics else None
        if fig is not None:
            doc.figure(fig, "search curves", "per epoch of the one-shot search (metrics.jsonl)")
            shown = True
        if run.candidates:
            scores = [c.score for c in run.candidates]
            found = next((i for i, c in enumerate(run.candidates) if c.arch and _same_arch(c.arch, run)), None)
            doc.figure(candidates_figure([c.latency_ms for c in run.candidates], scores, run.target_ms, found),
                       "candidates", f"{len(run.candidates)} evaluated candidates (candidates.jsonl)")
            shown = True
        for name, final in run.finals.items():
            if final.metrics:
                _training_curve(doc, final.metrics, f"final training of {name}",
                                f"final training of {name}: {final.name}")
                shown = True
    if not shown and run.kind != "comparison":
        doc.note("No per-epoch records yet (metrics.jsonl is empty or missing).")
    if run.kind == "comparison":
        folders = [(r.get("name"), seed.get("seed"), seed.get("run_dir")) for r in (run.compare or {}).get("rows", [])
                   for seed in r.get("seeds") or [] if seed.get("run_dir")]
        doc.text("Each training's curves are in its run folder (relative to the comparison's): "
                 "`segnas report FOLDER` shows them.")
        if folders:
            doc.table(("network", "seed", "run folder"), folders)


def _training_curve(doc: HtmlDocument, metrics: list[dict[str, Any]], name: str, caption: str) -> None:
    """A training's loss and val mIoU per epoch: a plot, or its figures in words for a single epoch."""
    if len(metrics) >= 2:
        doc.figure(training_curve_figure(metrics, name), name, caption)
        return
    r = metrics[0]
    figures = [f"train loss {_num(r.get('train_loss'), '.4f')}"] + (
        [f"val mIoU {pct(r['val_miou'], unit='%')}"] if "val_miou" in r else [])
    doc.text(f"{caption}: one epoch ({r.get('step', '?')} steps): {', '.join(figures)}.")


def _same_arch(arch: dict[str, Any], run: RunFiles) -> bool:
    from segnas.spaces.base import arch_key

    return run.found_key is not None and arch_key(arch) == run.found_key


# ------------------------------------------------------------------------------------ pareto
def _pareto(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    cmp = run.compare or {}
    rows = cmp.get("rows", [])
    if not plottable(rows):
        doc.note("No network has both a measured latency and a validation mIoU yet: nothing to plot.")
        return
    doc.figure(pareto_figure(rows, cmp.get("target_ms"), latency_label=f"measured latency (ms; {cmp.get('latency')})"),
               "Pareto front", "val mIoU (mean ± std over seeds) against measured latency; dashed: the target")
    doc.text("On the Pareto front (no other network is both faster and more accurate): "
             + ", ".join(pareto_front(rows)) + ".")


# ------------------------------------------------------------------------------------ architecture
def _architecture(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    archs = inputs.archs if inputs.archs is not None else architectures(run)
    if not archs:
        doc.note("No architecture file: a zoo network, or a search that has not derived one yet.")
    for name, data in archs.items():
        if len(archs) > 1:
            doc.heading(name)
        try:
            fig = draw_architecture(data)
        except Exception as exc:  # a drawing must not cost the rest of the report
            fig = None
            doc.note(f"The diagram of {name} could not be drawn ({type(exc).__name__}: {exc}).")
        if fig is not None:
            doc.figure(fig, f"architecture {name}", f"{data['space']} architecture {name}", native=True)
        else:
            doc.text(f"No diagram for space {data.get('space')!r}; its decisions:")
        doc.table(("decision", "value"), arch_decisions(data.get("arch")), collapsed=fig is not None
                  and f"all decisions of {name} (arch file)")


def architectures(run: RunFiles) -> dict[str, dict[str, Any]]:
    """The arch-file mappings a report draws, by name: a search's ``arch.json``; a train run's arch
    file (from its settings); a comparison's arch file of every method row."""
    if run.kind == "search":
        return {"arch": run.arch} if run.arch else {}
    if run.kind == "training":
        path = (run.config.get("model") or {}).get("arch")
        data = read_json(path, missing_ok=True) if path else None
        return {Path(path).stem: data} if isinstance(data, dict) and "space" in data else {}
    out = {}
    for r in (run.compare or {}).get("rows", []):
        if r.get("arch_file"):
            path = Path(r["arch_file"])
            path = path if path.is_absolute() else run.path / path
            data = read_json(path, missing_ok=True)
            if isinstance(data, dict) and "space" in data and "arch" in data:
                out[str(r.get("name"))] = data
    return out


# ------------------------------------------------------------------------------------ samples
def _samples(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    s = inputs.samples
    if s is None:
        return
    names = list(s.samples[0].preds) if s.samples else []
    columns = " | ".join(["image", "ground truth", *(names if len(names) > 1 else ["prediction"])])
    doc.text(f"{columns} — {s.source}")
    doc.swatches([(n, tuple(int(v) for v in s.palette[i])) for i, n in enumerate(s.class_names)])
    for sample in s.samples:
        strip = prediction_strip(sample.image, sample.truth, list(sample.preds.values()), s.palette)
        doc.image(rgb_png(display_size(strip)), sample.name, f"{sample.name}: {columns}")


def display_size(rgb: np.ndarray, min_height: int = 160, max_width: int = 1600) -> np.ndarray:
    """A strip at a readable size: small images enlarged by a whole factor (pixels kept sharp),
    wide ones shrunk to ``max_width``."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if h < min_height:
        k = min(-(-min_height // h), max(1, max_width // w))
        return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
    if w > max_width:
        return np.asarray(Image.fromarray(rgb).resize((max_width, round(h * max_width / w)), Image.BILINEAR))
    return rgb


# ------------------------------------------------------------------------------------ latency
def _latency(doc: HtmlDocument, run: RunFiles, inputs: ReportInputs) -> None:
    if not inputs.latency:
        return
    first = next(iter(inputs.latency.values()))
    doc.text(f"Predicted from the operator latency table ({first.context}): each operator's entry plus one "
             "runtime call overhead, as every search predicts latency.")
    doc.figure(latency_by_op_figure({n: b.by_op() for n, b in inputs.latency.items()},
                                    target_ms=run.target_ms if is_number(run.target_ms) else None),
               "latency per operator type", "predicted latency per operator type (dashed: the target)")
    for name, b in inputs.latency.items():
        doc.heading(f"{name}: {b.total_ms:.3f} ms by the operator table (before the learned correction), "
                    f"{len(b.keys)} operators")
        share = lambda ms: pct(ms / b.total_ms if b.total_ms else None, unit="%")  # noqa: E731
        ops = b.rows()
        rows = [(i, key.op, f"{key.cin}→{key.cout}", f"{key.h}x{key.w}", key.stride, key.dilation,
                 ", ".join(f"{k}={v}" for k, v in key.extra), f"{ms:.4f}", share(ms)) for i, key, ms in ops[:TOP_OPS]]
        if ops[TOP_OPS:]:
            ms = sum(r[2] for r in ops[TOP_OPS:])
            rows.append(("", f"{len(ops) - TOP_OPS} more", "", "", "", "", "", f"{ms:.4f}", share(ms)))
        rows.append(("", "call overhead", "", "", "", "", "", f"{b.overhead_ms:.4f}", share(b.overhead_ms)))
        doc.table(("#", "operator", "channels", "input", "stride", "dilation", "settings", "ms", "share"), rows,
                  numeric=(True, False, False, False, True, True, False, True, True))


SECTION_WRITERS = {"summary": _summary, "settings": _settings, "curves": _curves, "pareto": _pareto,
                   "architecture": _architecture, "samples": _samples, "latency": _latency}
