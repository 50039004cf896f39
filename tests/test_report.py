"""`segnas report`: one self-contained HTML page for a training run, a search run and a comparison,
checked as files (sections, embedded images, no external reference, atomic writes) and in a real
headless browser (no console error, every image decodes, the screenshot is not blank)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from segnas.cli.main import app
from segnas.config import TrainConfig
from segnas.errors import SegnasError
from segnas.jobs import train_job
from segnas.jobs.report import report_job
from segnas.jobs.search import make_settings, search_job
from segnas.report.plots import search_curve_panels, search_curves_figure
from segnas.spaces import get_space
from segnas.spaces.base import save_arch
from segnas.spaces.cells import CellsSpace
from segnas.spaces.joint import JointSpace

from conftest import quick_found_network_timing, skip_latency_calibration, tiny_config

_spec = importlib.util.spec_from_file_location("make_search_pins",
                                               Path(__file__).parent / "data" / "make_search_pins.py")
pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins)

SIZE = (48, 64)
CELLS = CellsSpace(layout=[1, 1, 1, 1], channels=[4, 8, 8, 8], nodes=2, stem_channels=4, decoder_width=8)
JOINT = JointSpace(channels=(8, 16), slots=(2, 2), stem_channels=4, decoder_width=8, dilations=(1, 2),
                   width_ratios=(1.0, 0.5))
IMG = re.compile(r'<img src="([^"]*)"')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny training run (a ``cells`` architecture), a tiny random search (``multires``, its found
    network trained 2 steps) and a hand-made comparison (a ``joint`` architecture and a zoo row),
    with a FLOPs latency table: deterministic entries, nothing timed (a module fixture runs before the
    function fixtures that keep the search's timing short: it does so itself)."""
    tmp = tmp_path_factory.mktemp("report")
    with pins.deterministic_latency(tmp) as latency, pytest.MonkeyPatch.context() as patch:
        skip_latency_calibration(patch)
        quick_found_network_timing(patch)
        arch_file = tmp / "cells_arch.json"
        save_arch(arch_file, CELLS, CELLS.sample(np.random.default_rng(0)))
        cfg = tiny_config(tmp, **{"model.name": None, "model.arch": str(arch_file), "model.options": {}, "epochs": 1})
        train = Path(train_job(TrainConfig.model_validate(cfg)).run_dir)
        settings = make_settings("random", {
            "data": {"name": "synthetic", "options": {"size": list(SIZE), "length": 6}, "crop_size": list(SIZE),
                     "batch_size": 4},
            "latency": {"target_ms": 50.0, "size": list(SIZE), "backend": "eager"}, "threads": 1,
            "out_dir": str(tmp / "runs"), "progress": False, "final": {"epochs": 1, "steps": 2, "overrides": {"ema_decay": None}},
            "random": {"space_options": {"layers": 6, "base_width": 4}, "candidates": 5,
                       "evaluator": {"proxy": {"images": 4, "batch_size": 2, "size": [32, 48]}}}})
        search = Path(search_job(settings, latency=latency(SIZE, 50.0))["run_dir"])
        yield {"train": train, "search": search, "compare": make_compare(tmp / "compare", train),
               "latency": latency(SIZE, 50.0)}


def make_compare(path: Path, seed_run: Path) -> Path:
    """A comparison run directory in compare.json's shape: one method row (a joint architecture,
    its seed's run directory given relative to the comparison) and one zoo row."""
    (path / "search").mkdir(parents=True)
    save_arch(path / "search" / "arch.json", JOINT, JOINT.sample(np.random.default_rng(1)), num_classes=11)
    shutil.copytree(seed_run, path / "train" / "seed0")
    data = {"name": "synthetic", "options": {"size": list(SIZE), "length": 12}, "crop_size": list(SIZE)}
    (path / "config.yaml").write_text(yaml.safe_dump(
        {"job": "compare", "data": data, "latency": {"target_ms": 5.0, "size": list(SIZE), "backend": "eager"}}))
    classes = {"Sky": 0.5, "Road": 0.25}
    rows = [
        {"name": "random", "kind": "method", "method": "random", "arch_file": "search/arch.json", "status": "ok",
         "seeds": [{"seed": 0, "val_miou": 0.31, "test_miou": 0.3, "per_class_iou": classes,
                    "train_cpu_seconds": 12.0, "steps": 2, "run_dir": "train/seed0"}],
         "val_miou_mean": 0.31, "val_miou_std": 0.01, "test_miou_mean": 0.3, "latency_ms": 4.0,
         "latency_vs_target": -0.2, "on_target": True, "params": 12345, "gflops": 0.01, "search_cpu_seconds": 30.0,
         "train_cpu_seconds": 12.0},
        {"name": "fast_scnn", "kind": "zoo", "method": None, "arch_file": None, "status": "missed target",
         "seeds": [{"seed": 0, "val_miou": 0.4, "test_miou": None, "per_class_iou": {"Sky": 0.7, "Road": None},
                    "train_cpu_seconds": 20.0, "steps": 2, "run_dir": None}],
         "val_miou_mean": 0.4, "val_miou_std": None, "test_miou_mean": None, "latency_ms": 9.0,
         "latency_vs_target": 0.8, "on_target": False, "params": 600000, "gflops": 0.2, "search_cpu_seconds": None,
         "train_cpu_seconds": 20.0}]
    (path / "compare.json").write_text(json.dumps({"settings": {"data": data}, "target_ms": 5.0,
                                                   "latency": "eager, 1 threads, 48x64", "rows": rows,
                                                   "total_cpu_hours": 0.02}))
    return path


def sections(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', html)


def section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def check_self_contained(html: str) -> list[str]:
    """Every embedded image decodes as a PNG; no src or href leaves the page. Returns the image alts."""
    assert not re.search(r'(src|href)\s*=\s*"(?!data:image/png;base64,|#)', html), "external reference"
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for uri in IMG.findall(html):
        Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).verify()
    return re.findall(r'<img [^>]*alt="([^"]*)"', html)


def latency_rows_ms(html: str) -> float:
    """The sum of the ms column of the latency section's table (operators and call overhead)."""
    table = section(html, "latency").split("<table>", 1)[1]
    return sum(float(re.findall(r'<td class="num">([^<]*)</td>', row)[-2])
               for row in table.split("<tr>")[2:])


def test_train_report(runs):
    path = report_job(runs["train"], latency_model=runs["latency"])
    assert path == runs["train"] / "report.html"
    html = path.read_text()
    assert sections(html) == ["summary", "settings", "curves", "architecture", "samples", "latency"]
    alts = check_self_contained(html)
    assert {"architecture cells_arch", "latency per operator type"} <= set(alts)
    # (one epoch: its figures in words, not a one-point plot)
    assert "training loss and val mIoU per epoch: one epoch" in section(html, "curves")
    assert sum(a.startswith("val image") for a in alts) == 3  # three validation images with their predictions
    assert "Building" in section(html, "summary")  # per-class IoU named by the checkpoint's classes
    assert re.search(r"parameters</td><td>\d+\.\d{3} M<", section(html, "summary"))
    assert "Building" in section(html, "samples")  # the colour legend
    assert "cells architecture" in section(html, "architecture")  # drawn from the run's arch file
    arch = json.loads(Path(yaml.safe_load((runs["train"] / "config.yaml").read_text())["model"]["arch"]).read_text())
    predicted = runs["latency"].predict(CELLS, CELLS.arch_from_dict(arch["arch"]), 11)
    assert latency_rows_ms(html) == pytest.approx(predicted, abs=1e-3)  # the model's prediction (rows: 4 decimals)
    # entries the table lacked were timed for this page, and the page says so; a second page needs none
    assert "operator entries were timed now for this page" in html
    again = report_job(runs["train"], runs["train"] / "again.html", samples=0, latency_model=runs["latency"])
    assert "timed now for this page" not in again.read_text()


def test_the_train_page_shows_the_per_class_iou_of_the_evaluation_best_pt_was_saved_at(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["train"], run)
    evaluation = {"val_miou": 0.5, "val_pixel_acc": 0.8, "val_mean_acc": 0.6}
    with open(run / "metrics.jsonl", "w") as fh:  # the best at epoch 1, a worse one last
        fh.write(json.dumps({"epoch": 1, **evaluation, "val_iou": [0.123] * 11}) + "\n")
        fh.write(json.dumps({"epoch": 2, **evaluation, "val_miou": 0.25, "val_iou": [0.456] * 11}) + "\n")
    summary = section(report_job(run, samples=0, latency_model=runs["latency"]).read_text(), "summary")
    assert "Per-class IoU (best evaluation, epoch 1)" in summary
    assert "12.3" in summary and "45.6" not in summary and "25.0" in summary  # the last mIoU is still told
    # a run killed before its first checkpoint: the classes are named from its dataset all the same
    shutil.rmtree(run / "checkpoints")
    summary = section(report_job(run, samples=0, latency=False).read_text(), "summary")
    assert "Pole" in summary and "SignSymbol" in summary


def test_a_moved_arch_file_is_drawn_from_the_checkpoint(runs, tmp_path):
    arch_file = Path(yaml.safe_load((runs["train"] / "config.yaml").read_text())["model"]["arch"])
    moved = arch_file.rename(tmp_path / "moved.json")
    try:
        html = report_job(runs["train"], tmp_path / "r.html", samples=0, latency_model=runs["latency"]).read_text()
    finally:
        moved.rename(arch_file)
    assert {"architecture cells_arch", "latency per operator type"} <= set(check_self_contained(html))
    assert "--samples 0" in section(html, "samples")


def test_search_report(runs):
    out = runs["search"].parent / "search.html"
    html = report_job(runs["search"], out, samples=1, latency_model=runs["latency"]).read_text()
    assert sections(html) == ["summary", "settings", "curves", "architecture", "samples", "latency"]
    alts = check_self_contained(html)
    assert {"candidates", "architecture arch", "latency per operator type"} <= set(alts)
    assert "final training of arch: " in section(html, "curves")
    assert sum(a.startswith("val image") for a in alts) == 1
    assert "random / multires" in section(html, "summary") and "method: random" in section(html, "settings")
    assert re.search(r"<h1>Search: random / multires on synthetic(, target [\d.]+ ms)? \(", html)
    assert re.search(r"final training of arch</td><td>\d+ s, \d+ steps<", section(html, "summary"))
    # the answer first: the found network's measured latency against the target, in words
    verdict = html.split('class="verdict', 1)[1].split("</p>", 1)[0]
    assert "Found network arch:" in verdict and "ms measured against the" in verdict
    found = json.loads((runs["search"] / "arch.json").read_text())
    space = get_space("multires")
    predicted = runs["latency"].predict(space, space.arch_from_dict(found["arch"]), 11)
    assert latency_rows_ms(html) == pytest.approx(predicted, abs=1e-3)


def test_compare_report(runs):
    html = report_job(runs["compare"], latency_model=runs["latency"]).read_text()
    assert sections(html) == ["summary", "settings", "curves", "pareto", "architecture", "samples", "latency"]
    alts = check_self_contained(html)
    assert "Pareto front" in alts and "architecture random" in alts
    assert "fast_scnn" in section(html, "pareto")  # on the front: nothing beats it on mIoU
    summary = section(html, "summary")
    assert "31.00 ± 1.00%" in summary and "missed target" in summary and "Road" in summary
    assert "train/seed0" in section(html, "samples")  # the best network with a checkpoint: the method row's
    assert "fast_scnn" in section(html, "latency")  # the zoo row is named as measured whole


def test_one_shot_search_curves_show_lambda_and_candidates_left():
    records = [{"phase": "pretrain", "epoch": 1, "weight_loss": 2.0},
               {"phase": "search", "epoch": 1, "weight_loss": 1.8, "arch0_seg": 1.5, "lambda": 0.01,
                "derived_latency_ms": 3.0, "active_ops": 20, "soft_miou": 0.1, "single": False},
               {"phase": "search", "epoch": 2, "weight_loss": 1.7, "arch0_seg": 1.4, "lambda": 0.02,
                "derived_latency_ms": 2.5, "active_ops": 12, "soft_miou": 0.12, "single": False}]
    panels = {title: keys for title, _, keys in search_curve_panels(records)}
    assert panels == {"losses": ["weight_loss", "arch0_seg"], "mIoU of the supernet": ["soft_miou"],
                      "λ (latency weight)": ["lambda"], "predicted latency": ["derived_latency_ms"],
                      "candidates left": ["active_ops"]}
    assert search_curves_figure(records) is not None
    assert search_curves_figure([{"phase": "search", "epoch": 1}]) is None


def test_a_failed_report_leaves_the_previous_one(runs, monkeypatch):
    import segnas.report.html_report as html_report

    out = runs["compare"] / "again.html"
    out.write_text("previous")

    def boom(*args):
        raise RuntimeError("rendering failed")

    monkeypatch.setitem(html_report.SECTION_WRITERS, "latency", boom)
    with pytest.raises(RuntimeError):
        report_job(runs["compare"], out, samples=0, latency=False)
    assert out.read_text() == "previous" and not list(runs["compare"].glob(".again.html*"))


def test_bad_inputs_are_one_line_errors(runs, tmp_path):
    run = CliRunner().invoke
    for args, message in ((["report", str(tmp_path)], "no config.yaml"),
                          (["report", str(tmp_path / "none")], "run directory not found"),
                          (["report", str(runs["compare"]), "--out", str(tmp_path)], "is a folder"),
                          (["report", str(runs["compare"]), "--samples", "-1"], "--samples"),
                          (["report", str(runs["compare"] / "compare.json")], "is a file; give the run directory"),
                          (["report", str(runs["compare"]), "--out", str(runs["compare"] / "compare.json" / "r.html")],
                           "is a file, not a folder")):
        result = run(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = run(app, ["report", str(runs["compare"]), "--samples", "0", "--no-latency", "--out",
                       str(tmp_path / "new" / "r.html")])  # a missing folder is made
    assert result.exit_code == 0 and (tmp_path / "new" / "r.html").is_file(), result.output
    (tmp_path / "config.yaml").write_text("job: x\n")
    with pytest.raises(SegnasError, match="cannot tell the kind of run"):
        report_job(tmp_path)


def test_report_cli_without_latency(runs, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(runs["train"]), "--out", str(out), "--samples", "0",
                                      "--no-latency"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "--no-latency" in section(html, "latency") and "val image" not in html


# --------------------------------------------------------------------------------- in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Appended to a copy of the page: after load, the body records how many images it has and how
#: many did not decode.
PROBE = ('<script>window.addEventListener("load", () => {const im = [...document.images]; '
         'document.body.setAttribute("data-images", im.length); document.body.setAttribute("data-broken", '
         'im.filter(i => !(i.complete && i.naturalWidth > 0)).length);});</script>')


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr",
                           "--v=0", *args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def load(html: str, tmp_path: Path, name: str) -> tuple[str, list[str]]:
    """The DOM after load of ``html`` (with the image probe) and the console messages."""
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    done = chromium(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; CI installs it)")
def test_report_renders_in_a_headless_browser(runs, tmp_path):
    # the checks can fail: a page with a script error and a broken image is caught
    dom, console = load('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"><script>nope()</script>'
                        "</body></html>", tmp_path, "bad")
    assert console and 'data-broken="1"' in dom
    report = report_job(runs["search"], runs["search"].parent / "browser.html", samples=1,
                        latency_model=runs["latency"])
    html = report.read_text()
    dom, console = load(html, tmp_path, "report")
    assert console == []
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert images == len(IMG.findall(html)) >= 4 and 'data-broken="0"' in dom
    assert dom.count("<table>") >= 3 and '<section id="latency">' in dom
    shot = tmp_path / "shot.png"
    done = chromium(report, tmp_path / "profile", "--hide-scrollbars", "--window-size=1200,2400",
                    f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (2400, 1200, 3)
    inked = rgb.mean(axis=2) < 250
    assert inked.mean() > 0.05 and inked[:300].mean() > 0.03  # not blank; the title and summary table on top
    assert ((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean() > 0.002  # coloured plots, not only text


def test_the_comparison_verdict_names_the_most_accurate_network_within_the_budget():
    from segnas.report.verdict import compare_verdict

    def row(name, kind, miou, ms, target=2.0):
        return {"name": name, "kind": kind, "val_miou_mean": miou, "latency_ms": ms,
                "latency_vs_target": None if ms is None else ms / target - 1}

    rows = [row("saswot", "method", 0.33, 2.17), row("random", "method", 0.36, 2.5),
            row("fast_scnn", "zoo", 0.3482, 1.01)]
    text, met = compare_verdict({"target_ms": 2.0, "rows": rows})
    assert met and text.startswith("Most accurate within the 2 ms budget") and "fast_scnn (zoo)" in text.split(".")[0]
    assert "random" not in text  # 25% over the target: not within the budget, however accurate
    assert "saswot (method): val mIoU 33.00% at 2.17 ms (+8.5%), is 1.82 val mIoU points below" in text
    rows[0]["val_miou_mean"] = 0.40  # a searched network ahead: the best zoo network is named below it
    text, met = compare_verdict({"target_ms": 2.0, "rows": rows})
    assert "saswot (method)" in text.split(". The")[0] and "hand-designed network within it, fast_scnn" in text
    slow = [row("a", "method", 0.3, 2.0, 0.5), row("b", "zoo", 0.3, 1.0, 0.5), row("c", "zoo", 0.2, None)]
    text, met = compare_verdict({"target_ms": 0.5, "rows": slow})
    assert not met and text.startswith("No network runs within the 0.5 ms budget (+15%); the fastest is b (zoo)")


def test_a_search_verdict_says_when_the_target_did_not_constrain_the_search_or_was_missed():
    from segnas.report.verdict import search_verdict

    net = {"measured_ms": 2.92, "latency_vs_target": 2.92 / 50 - 1, "training": {"best_val_miou": 0.061}}
    text, met = search_verdict("arch", net, 50)
    assert met and "2.92 ms measured against the 50 ms target (-94.2%), val mIoU 6.10%" in text
    assert "It uses 6% of the target: the target hardly constrained this search" in text
    text, met = search_verdict("arch", {**net, "latency_vs_target": 0.3}, 2.25)
    assert not met and "It runs over the target" in text


def test_a_runs_notes_from_its_log_are_shown_once_at_the_top(tmp_path):
    from segnas.report.runfiles import log_notes

    (tmp_path / "log.txt").write_text("2026-12-07 06:43:10 note: the warm-up is longer than the budget\n"
                                      "2026-12-07 06:43:11 epoch 1 loss 3.6 val mIoU 6.10%\n"
                                      "2026-12-07 06:43:12 note: the warm-up is longer than the budget\n"
                                      "2026-12-07 06:43:13 warning: the host was busy\n"
                                      "2026-12-07 06:43:14 latency: warning: calibrated on a busy host\n")
    assert log_notes(tmp_path / "log.txt") == ["note: the warm-up is longer than the budget", "warning: the host was busy",
                                               "latency: warning: calibrated on a busy host"]
    from segnas.report.html_report import summary_notes
    from segnas.report.runfiles import RunFiles

    run = RunFiles(tmp_path, "comparison")
    run.notes = log_notes(tmp_path / "log.txt")
    run.compare = {"notes": ["the host was busy", "saswot: its search reached the time limit"]}
    assert summary_notes(run)[3:] == ["note: saswot: its search reached the time limit"]  # (the first: logged)


def test_a_comparison_shows_every_networks_predictions_of_the_same_images_side_by_side():
    import numpy as np

    from segnas.jobs.report import merged_samples
    from segnas.report.html import HtmlDocument
    from segnas.report.html_report import ReportInputs, Sample, SampleSet, _samples

    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)

    def one(name: str, value: int, shape=(8, 10)) -> SampleSet:
        img = np.zeros((*shape, 3), np.uint8)
        pred = {name: np.full(shape, value, np.uint8)}
        return SampleSet([Sample("val image 0", img, np.zeros(shape, np.uint8), pred)], palette, ["a", "b"],
                         f"runs/{name}/best.pt (ema weights), synthetic val split")

    merged, left_out = merged_samples([one("saswot", 1), one("fast_scnn", 0), one("other_size", 1, (16, 20))])
    assert list(merged.samples[0].preds) == ["saswot", "fast_scnn"] and left_out == ["other_size"]
    assert merged.source == "each network's best (else last) checkpoint, synthetic val split"
    doc = HtmlDocument("t")
    doc.section("Samples", "samples")
    _samples(doc, None, ReportInputs(samples=merged))
    page = doc.render()
    assert "image | ground truth | saswot | fast_scnn" in page
    assert 'alt="val image 0"' in page


def test_a_training_curve_is_a_plot_from_two_epochs_and_words_for_one():
    from segnas.report.html import HtmlDocument
    from segnas.report.html_report import _training_curve

    records = [{"epoch": 1, "step": 10, "train_loss": 2.5, "val_miou": 0.1},
               {"epoch": 2, "step": 20, "train_loss": 2.0, "val_miou": 0.2}]
    for metrics, plotted in ((records, True), (records[:1], False)):
        doc = HtmlDocument("t")
        doc.section("Curves", "curves")
        _training_curve(doc, metrics, "training curve", "training")
        page = doc.render()
        assert ('alt="training curve"' in page) == plotted
        assert plotted or "training: one epoch (10 steps): train loss 2.5000, val mIoU 10.00%." in page


def test_the_comparison_verdict_in_the_corner_cases():
    from segnas.report.verdict import compare_verdict, search_verdict

    def row(name, kind, miou, ms, std=None, seeds=("ok",)):
        return {"name": name, "kind": kind, "val_miou_mean": miou, "val_miou_std": std, "latency_ms": ms,
                "latency_vs_target": None if ms is None else ms / 10 - 1, "seeds": [{"status": s} for s in seeds]}

    failed = [row("a", "method", None, None), row("z", "zoo", None, None)]
    text, met = compare_verdict({"target_ms": 10, "rows": failed})  # nothing trained yet: not "too slow"
    assert not met and text == ("No network was both trained and measured: nothing to compare. Why: a, z: not "
                                "trained yet.")
    refused = "failed: target 1 ms: even the fastest candidate is predicted at 3 ms\n(details)"
    failed = [{**row(n, "method", None, None), "status": refused} for n in ("a", "b")] + \
        [{**row("z", "zoo", 0.5, None), "status": "ok"}]
    text, _ = compare_verdict({"target_ms": 10, "rows": failed})  # why, once per reason, on one line
    assert text.endswith("Why: a, b: target 1 ms: even the fastest candidate is predicted at 3 ms; z: not measured "
                         "yet.")
    text, _ = compare_verdict({"target_ms": 10, "rows": [row("a", "method", 0.6, 20), row("z", "zoo", 0.5, 6)]})
    assert text.endswith("No searched network runs within it; the most accurate, a (method): val mIoU 60.00% at "
                         "20.00 ms (+100.0%).")
    tie = [row("a", "method", 0.5, 9, 0.01), row("z", "zoo", 0.5, 6, 0.01)]
    assert "ties with a." in compare_verdict({"target_ms": 10, "rows": tie})[0]
    two = [row("z", "zoo", 0.6, 6), row("s", "method", 0.5, 9), row("r", "method", 0.5, 8), row("q", "method", 0.4, 8)]
    text, _ = compare_verdict({"target_ms": 10, "rows": two})  # two methods found equally accurate networks
    assert "The best searched network within it, s (method): val mIoU 50.00% at 9.00 ms (-10.0%) (r ties with it), " \
           "is 10.00 val mIoU points below." in text
    close = [row("a", "method", 0.51, 9, 0.02, ("ok", "failed: x")), row("z", "zoo", 0.50, 6, 0.01)]
    text, _ = compare_verdict({"target_ms": 10, "rows": close})
    assert "(-10.0%; 1 of 2 seeds trained)" in text
    assert "is 1.00 val mIoU points below (within the seeds' spread)" in text
    text, _ = search_verdict("arch", {"measured_ms": 4.0, "latency_vs_target": None}, None)
    assert text == "Found network arch: 4.00 ms measured (no latency target)."


def test_classes_no_compared_network_segments_are_named(tmp_path):
    from segnas.report.html import HtmlDocument
    from segnas.report.html_report import _compare_summary
    from segnas.report.runfiles import RunFiles

    rows = [{"name": n, "kind": k, "val_miou_mean": 0.4, "latency_ms": 1.0, "latency_vs_target": -0.5,
             "per_class_iou": {"Road": 0.9, "Pole": 0.0, "Sign": 0.0 if n == "a" else 0.1}}
            for n, k in (("a", "method"), ("z", "zoo"))]
    doc = HtmlDocument("t")
    doc.section("Summary", "summary")
    _compare_summary(doc, RunFiles(tmp_path, "compare", compare={"target_ms": 2.0, "rows": rows}))
    assert "IoU 0 for every network: Pole (no network segments it under this training budget)." in doc.render()


def test_an_operator_has_one_colour_in_every_report():
    from segnas.report.plots import latency_by_op_figure, op_colour

    first = latency_by_op_figure({"a": {"conv": 1.0, "sep_conv": 0.5, "call overhead": 0.1}}, target_ms=2.0)
    second = latency_by_op_figure({"b": {"sep_conv": 3.0, "conv": 0.2}})
    for fig in (first, second):
        bars = {c.get_label(): c.patches[0].get_facecolor() for c in fig.axes[0].containers}
        assert bars["sep_conv"] == pytest.approx(op_colour("sep_conv"))
        assert bars["conv"] == pytest.approx(op_colour("conv"))
    assert op_colour("conv") != op_colour("sep_conv") and op_colour("call overhead") == "0.6"
    assert [line.get_xdata()[0] for line in first.axes[0].lines] == [2.0]  # the target, within reach of the bars


def test_a_predicted_latency_shows_the_tables_figure_then_the_corrected_one():
    from segnas.report.html_report import predicted

    assert predicted({"predicted_table_ms": 4.54, "predicted_ms": 3.53}) == "4.54 → 3.53"
    assert predicted({"predicted_table_ms": 3.53, "predicted_ms": 3.53}) == "3.53"  # no correction applied
    assert predicted({"predicted_ms": None}) == "-"


def test_a_mobile_architecture_is_drawn_with_its_stages_and_the_high_resolution_branch():
    from matplotlib.figure import Figure

    from segnas.report.arch_draw import _blocks_text, draw_architecture
    from segnas.spaces.mobile.arch import Block, fast_scnn

    fig = draw_architecture({"space": "mobile", "arch": fast_scnn().to_dict()})
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "1/16, 64 ch\n3× t6 k3" in texts and "1/8 branch, 64 ch" in texts and "fusion +\n128 ch" in texts
    assert _blocks_text((Block(6), Block(6), Block(4, 5, 2))) == "2× t6 k3\n1× t4 k5 d2"


def test_the_pareto_plots_names_overlap_neither_each_other_nor_a_point():
    """The README comparison's 13 networks, 6 of them within 5 ms of each other: every name placed
    where no other name or marker is."""
    from segnas.report.pareto import pareto_figure

    rows = json.loads((Path(__file__).parents[1] / "benchmarks" / "compare" / "results" /
                       "compare_camvid.json").read_text())["rows"]
    fig = pareto_figure(rows, 15.0)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len([r for r in rows if r.get("latency_ms") is not None])
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    points = [ax.transData.transform((r["latency_ms"], 100 * r["val_miou_mean"])) for r in rows]
    assert not any(box.contains(x, y) for box in boxes for x, y in points)


def test_a_training_page_says_when_the_training_has_not_ended_and_the_data_options_it_used(tmp_path):
    from segnas.report.html import HtmlDocument
    from segnas.report.html_report import _train_summary
    from segnas.report.runfiles import RunFiles

    def page(step: int, budget: dict | None = None, **record) -> str:
        config = {**(budget or {"max_steps": 400, "epochs": 100}), "model": {"name": "fast_scnn"},
                  "data": {"name": "camvid", "options": {"holdout": "0006R0"}}}
        doc = HtmlDocument("t")
        doc.section("Summary", "summary")
        metrics = [{"epoch": 2, "step": step, **record}]
        _train_summary(doc, RunFiles(tmp_path, "training", config, metrics=metrics), None, None)
        return doc.render()

    killed = page(66)
    assert "The training has not ended (66 steps of its budget done)" in killed
    assert "camvid (holdout=0006R0) (val split scored" in killed and "400 steps or 100 epochs" in killed
    assert "has not ended" not in page(400)
    # a time budget is told by the trainer's record (a run of an earlier segnas without it: taken as ended)
    assert "The training has not ended (66 steps" in page(66, {"time_budget_min": 10}, finished=False)
    assert "has not ended" not in page(66, {"time_budget_min": 10}, finished=True)
    assert "has not ended" not in page(66, {"time_budget_min": 10})


def test_each_metrics_record_of_a_training_says_whether_it_ended(tmp_path):
    """The training page tells a stopped time-budget training from an ended one by this field."""
    from segnas.api import train

    result = train({"model": {"name": "fast_scnn", "options": {"width": 0.25}}, "max_steps": 3, "threads": 1,
                    "data": {"name": "synthetic", "batch_size": 2, "crop_size": [32, 32],
                             "options": {"length": 4, "size": [32, 32]}},
                    "progress": False, "out_dir": str(tmp_path)})
    assert [r["finished"] for r in result.history] == [False, True]


def test_a_comparison_page_names_its_test_split_and_shows_its_per_class_iou(tmp_path):
    from segnas.report.html import HtmlDocument
    from segnas.report.html_report import _compare_summary
    from segnas.report.runfiles import RunFiles

    rows = [{"name": "a", "kind": "method", "val_miou_mean": 0.4, "test_miou_mean": 0.3, "latency_ms": 1.0,
             "latency_vs_target": -0.5, "per_class_iou": {"Road": 0.9}, "test_per_class_iou": {"Road": 0.7}}]
    doc = HtmlDocument("t")
    doc.section("Summary", "summary")
    _compare_summary(doc, RunFiles(tmp_path, "comparison", compare={"target_ms": 2.0, "rows": rows,
                                                                    "test_split": "holdout"}))
    html = doc.render()
    assert "<th>holdout mIoU</th>" in html and "Per-class holdout IoU (mean over seeds)" in html and "70.00%" in html
