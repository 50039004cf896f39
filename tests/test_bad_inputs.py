"""The bad-input matrix (issue 30): every user mistake exits 2 with one line naming the file, field
or value at fault, prints no traceback and leaves no run directory behind.

A case is ``(args, needle)`` or ``(args, needle, setup)``: ``args`` are CLI arguments in which
``{tmp}`` stands for the case's temporary folder (its run directories go to ``{tmp}/runs``),
``needle`` is text the one error line must contain, and ``setup(tmp_path)`` creates the bad file(s).
``CLI_CASES`` are mistakes in arguments and settings; ``DATA_CASES`` mistakes in datasets and the
machine's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from segnas.cli.main import app

OUT = "{tmp}/runs"
SYN = ["--data", "synthetic", "--set", "data.options={size: [32, 40], length: 4}", "--set", "progress=false",
       "--out-dir", OUT]
SEARCH = ["--data", "synthetic", "--size", "32x48", "--backend", "eager", "--set", "progress=false",
          "--out-dir", OUT]


def _checkpoint(tmp_path):
    """A small trained-network checkpoint (untrained weights) at {tmp}/m.pt."""
    from segnas.zoo import build_model

    model = build_model("fast_scnn", 2, width=0.5)
    torch.save({"model": model.state_dict(), "model_spec": {"kind": "zoo", "name": "fast_scnn",
                                                            "options": {"width": 0.5}},
                "classes": {"names": ["a", "b"], "colors": [[0, 0, 0], [255, 255, 255]]}}, tmp_path / "m.pt")


def _torchscript_file(tmp_path):
    """A TorchScript file at {tmp}/m.ts.pt (what `segnas export --format torchscript` writes) and a
    run directory at {tmp}/run."""
    from segnas.zoo import build_model

    from segnas.cost.export import export_torchscript

    export_torchscript(build_model("fast_scnn", 2, width=0.5), tmp_path / "m.ts.pt", (1, 3, 32, 48))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)


def _image(tmp_path):
    _checkpoint(tmp_path)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "x.png")


def _existing_file(tmp_path):
    _image(tmp_path)
    (tmp_path / "taken").write_text("a file, not a folder")


def _arch_bad_field(tmp_path):
    from segnas.spaces.multires import MultiResSpace

    space = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0))
    arch = space.sample(np.random.default_rng(0)).to_dict()
    arch["bogus_field"] = 3
    (tmp_path / "bad.json").write_text(json.dumps({"space": "multires", "arch": arch}))


def _arch_not_json(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")


def _arch_no_space(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"arch": {}}))


def _arch_file(tmp_path):
    (tmp_path / "a.json").write_text("{}")


def _resume_dir(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("model: {name: fast_scnn}\n")


def _broken_run(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("method: random\njob: [r\n")


def _edited_run(tmp_path):
    """A training run at {tmp}/edited whose config.yaml was edited after it started: its learning
    rate (refused on resume) and its threads (a setting a resume may change)."""
    from segnas.config import TrainConfig
    from segnas.training.start import check_unedited, open_run

    run = open_run(TrainConfig.model_validate({"out_dir": str(tmp_path), "job": "edited"}), None)
    path = run.path.rename(tmp_path / "edited") / "config.yaml"
    path.write_text(path.read_text().replace("threads: null", "threads: 2"))
    check_unedited(path.parent)  # threads: where it computes, not what
    return path


def test_a_run_without_its_started_settings_says_that_edits_cannot_be_told(tmp_path):
    """Removing the hidden .started.yaml (rsync without dotfiles) silently turned the check off: a
    resume trained on with an edited learning rate."""
    from segnas.errors import SegnasWarning
    from segnas.training.start import check_unedited

    path = _edited_run(tmp_path)
    (path.parent / ".started.yaml").unlink()
    with pytest.warns(SegnasWarning, match=r"\.started\.yaml: missing .* a config.yaml edited since cannot be told"):
        check_unedited(path.parent)


def _edited_lr(tmp_path):
    path = _edited_run(tmp_path)
    path.write_text(path.read_text().replace("lr: 0.05", "lr: 0.1"))


def _other_runs(tmp_path):
    """A random-search run at {tmp}/searchrun, a file at {tmp}/taken."""
    (tmp_path / "searchrun").mkdir()
    (tmp_path / "searchrun" / "config.yaml").write_text("method: random\njob: r\n")
    (tmp_path / "taken").write_text("a file, not a folder")


def _ema_best(tmp_path):
    """A best.pt of a run trained with EMA: it holds only the EMA weights."""
    _checkpoint(tmp_path)
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    state["config"] = {"ema_decay": 0.99}
    torch.save(state, tmp_path / "best.pt")


def _onnx_files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not checked before the backend")
    (tmp_path / "bad.onnx").write_text("not an ONNX model")


def _onnx_fixed_size(tmp_path):
    """{tmp}/fixed.onnx: Fast-SCNN exported for 32x48 only."""
    from segnas.cost import export_onnx
    from segnas.zoo import build_model

    export_onnx(build_model("fast_scnn", 2, width=0.5).eval(), tmp_path / "fixed.onnx", (1, 3, 32, 48))


def _not_utf8(tmp_path):
    """{tmp}/a16.json: an architecture file in UTF-16 (a shell redirect); {tmp}/p.json: a broken proxy file."""
    (tmp_path / "a16.json").write_text('{"space": "mobile", "arch": {}}', encoding="utf-16")
    (tmp_path / "p.json").write_text('{"expression": ')


def _frames_one_damaged(tmp_path):
    """Frames f0.png (good) and f1.png (truncated): predict must write nothing."""
    _checkpoint(tmp_path)
    (tmp_path / "frames").mkdir()
    for name in ("f0", "f1"):
        Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "frames" / f"{name}.png")
    damaged = tmp_path / "frames" / "f1.png"
    damaged.write_bytes(damaged.read_bytes()[:60])


def _duplicate_key(tmp_path):
    (tmp_path / "dup.yaml").write_text("optim:\n  lr: 0.001\nepochs: 1\noptim:\n  momentum: 0.8\n")


def _comparison_run(tmp_path):
    (tmp_path / "cmprun").mkdir()
    (tmp_path / "cmprun" / "config.yaml").write_text("methods: {}\n")


def _list_files(tmp_path):
    for name in ("list.yaml", "list_recipe.yaml"):
        (tmp_path / name).write_text("- optim.lr: 0.1\n")


def _other_method_file(tmp_path):
    (tmp_path / "s1.yaml").write_text("method: saswot\n")


def _arch_newer(tmp_path):
    from segnas.spaces.multires import MultiResSpace

    arch = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0)).sample(np.random.default_rng(0))
    (tmp_path / "v.json").write_text(json.dumps({"space": "multires", "version": 99, "arch": arch.to_dict()}))
    (tmp_path / "sp.json").write_text(json.dumps({"space": ["multires"], "arch": arch.to_dict()}))


def _other_class_names(tmp_path):
    """m.pt predicts classes a, b, c; the folder dataset at {tmp}/named calls them a, b, car."""
    from segnas.zoo import build_model

    model = build_model("fast_scnn", 3, width=0.5)
    torch.save({"model": model.state_dict(), "model_spec": {"kind": "zoo", "name": "fast_scnn",
                                                            "options": {"width": 0.5}},
                "classes": {"names": ["a", "b", "c"], "colors": [[0, 0, 0], [9, 9, 9], [255, 255, 255]]}},
               tmp_path / "m.pt")
    root = _folder_data(tmp_path, "named")
    (root / "dataset.yaml").write_text("classes: [a, b, car]\n")


def _damaged_search_result(tmp_path):
    (tmp_path / "rr").mkdir()
    (tmp_path / "rr" / "config.yaml").write_text("method: random\n")
    (tmp_path / "rr" / "search_result.json").write_text("[1, 2]")


CLI_CASES = [
    # train: options and settings
    (["train"] + SYN + ["--model", "fast_scnn", "--arch", "{tmp}/a.json"], "--model", _arch_file),
    (["train"] + SYN + ["--model", "nope_net"], "nope_net"),
    (["train"] + SYN + ["--set", "optim.name=adamw", "--set", "optim.betas=[1.5, 0.9]"], "optim.betas"),
    (["train"] + SYN + ["--set", "optim.power=-2"], "optim.power"),
    (["train"] + SYN + ["--set", "=5"], "--set: expected key=value, got '=5'"),
    (["train"] + SYN + ["--size", "32x40", "--set", "data.scale=[2.0, 0.5]", "--set", "optim.power=-2"],
     "got [2, 0.5] [and 1 more error]"),  # brackets in a message are printed, not read as markup
    (["train"] + SYN + ["--set", "model.options={width: -1}"], "model.options: width"),
    (["train"] + SYN + ["--model", "ddrnet_23_slim", "--set", "model.options={variant: '39'}"],
     "model.options: variant: DDRNet has 23, 23_slim, got '39'"),
    (["train"] + SYN + ["--recipe", "{tmp}/missing.yaml"], "missing.yaml: recipe file not found"),
    (["train"] + SYN + ["--set", "optim.lr=inf"], "optim.lr"),
    (["train"] + SYN + ["--size", "32x40", "--set", "data.scale=[2.0, 0.5]"], "data.scale"),
    (["train"] + SYN + ["--set", "data.crop_size=[32.9, 40]"], "whole pixels"),
    (["train"] + SYN + ["--set", "loss.class_weights=[1, -1]"], "loss.class_weights"),
    (["train"] + SYN + ["--set", "loss.class_weights=median"], "loss.class_weights: a list of numbers (one per class) "
                                                              "or median_frequency (got 'median')"),
    (["train"] + SYN + ["--set", "loss.smoothing=0.1"], "loss.smoothing: unknown setting (did you mean "
                                                        "loss.label_smoothing?)"),
    (["train"] + SYN + ["--set", "minutes=5"], "minutes: unknown setting (did you mean time_budget_min?)"),
    (["train"] + SYN + ["-c", "{tmp}/dup.yaml"], "dup.yaml: line 4 invalid YAML (key 'optim' given twice",
     _duplicate_key),
    (["train"] + SYN + ["-c", "{tmp}/list.yaml"], "list.yaml: expected a mapping of settings (key: value lines) at "
                                                  "the top level", _list_files),
    (["train"] + SYN + ["--recipe", "{tmp}/list_recipe.yaml"], "list_recipe.yaml: expected a mapping of settings",
     _list_files),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "-c", "{tmp}/s1.yaml"], "method: saswot, but this is",
     _other_method_file),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "saswot.space_options={layers: 1}"],
     "space_options: multires space: layers"),
    (["search", "ssr"] + SEARCH + ["--target-ms", "5", "--set", "ssr.arch_betas=[1.5, 0.9]"], "arch_betas"),
    (["search", "random"] + SEARCH[:2] + ["--size", "100000x100000"] + SEARCH[4:] + ["--target-ms", "5"],
     "latency.size (--size): a forward pass"),
    (["bench", "-m", "fast_scnn", "--size", "100000x100000"], "--size: a forward pass of 1 × 100000x100000"),
    (["train"] + SYN + ["--data-root", "{tmp}/my_data"], "--data-root (data.root): the synthetic dataset"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--data-root", "{tmp}/my_data"], "reads no folder"),
    (["train"] + SYN + ["--arch", "{tmp}/missing.json"], "missing.json"),
    (["train"] + SYN + ["--arch", "{tmp}/bad.json"], "bad.json: invalid JSON at line 1", _arch_not_json),
    (["train"] + SYN + ["--arch", "{tmp}/bad.json"], "bad.json: missing field 'space'", _arch_no_space),
    (["train"] + SYN + ["--arch", "{tmp}/bad.json"], "bogus_field", _arch_bad_field),
    (["train"] + SYN + ["--set", "data.crop_size=[64,80,3]"], "data.crop_size"),
    (["train"] + SYN + ["--size", "12by3"], "12by3"),
    (["train"] + SYN + ["--minutes", "-1"], "--minutes"),
    (["train"] + SYN + ["--minutes", "0"], "--minutes"),
    (["train"] + SYN + ["--steps", "0"], "--steps"),
    (["train"] + SYN + ["--epochs", "0"], "--epochs"),
    (["train"] + SYN + ["--batch-size", "0"], "--batch-size"),
    (["train"] + SYN + ["--teacher", "{tmp}/no_teacher.pt"], "no_teacher.pt"),
    (["train"] + SYN + ["--set", "nosuch.key=1"], "nosuch"),
    (["train"] + SYN + ["--lr", "0.1", "--set", "optim.lr=0.2"], "--lr and --set optim.lr=0.2: two values for optim.lr"),
    (["train"] + SYN + ["--set", "seed=1", "--set", "seed=2"], "--set seed: given twice, 1 and 2"),
    (["compare", "--workers", "2", "--set", "workers=3"], "--workers and --set workers=3: two values for workers"),
    # a bad --set beside a settings file is named as --set's, not the file's
    (["compare", "-c", "{tmp}/c.yaml", "--set", "train.stepz=3"], "error: train.stepz: unknown setting (did you mean",
     lambda tmp: (tmp / "c.yaml").write_text("data: {name: synthetic}\nlatency: {target_ms: 5}\n")),
    (["compare", "-c", "{tmp}/c.yaml", "--set", "latency.target_ms=0"],
     "error: latency.target_ms: Input should be greater than 0 (got 0)",
     lambda tmp: (tmp / "c.yaml").write_text("data: {name: synthetic}\nlatency: {target_ms: 5}\n")),
    (["search", "random", "-c", "{tmp}/s.yaml", "--set", "random.candidatez=3"], "error: random.candidatez: unknown",
     lambda tmp: (tmp / "s.yaml").write_text("random: {candidates: 2}\n")),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--candidates", "4", "--set", "random.candidates=8"],
     "--candidates and --set random.candidates=8: two values for random.candidates"),
    (["train", "--resume", "{tmp}/old", "--epochs", "3"], "--epochs", _resume_dir),
    (["train", "--resume", "{tmp}/nowhere"], "nowhere"),
    # search
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--minutes", "-1"], "--minutes"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--minutes", "0"], "--minutes"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "0.0001"], "below the runtime's call overhead"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--target-fps", "30"], "target_fps"),
    (["search", "rl"] + SEARCH + ["--target-ms", "5", "--space", "mobile", "--set", "rl.child.stage1_steps=3"],
     "rl.child: settings of the encdec child evaluator"),
    (["search", "rl"] + SEARCH + ["--target-ms", "5", "--set", "rl.space_options={aux_cells: false}"],
     "rl.space_options.aux_cells"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "saswot.space_options={stage_widths: [8]}"],
     "space_options: 'stage_widths' is not an option of space 'multires'"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--space", "mobile", "--set",
                                      "random.space_options={layers: 3}"],
     "space_options: 'layers' is not an option of space 'mobile'"),
    (["search", "rl"] + SEARCH + ["--target-ms", "5", "--set", "rl.child.polyak_decay=[0.9, 1.5]"],
     "polyak_decay"),
    (["search", "fasterseg"] + SEARCH + ["--target-ms", "0.0001"], "below the runtime's call overhead"),
    (["search", "fasterseg"] + SEARCH + ["--target-ms", "5", "--set", "fasterseg.adapt=false", "--set",
                                         "fasterseg.tolerance=0.2"], "fasterseg.tolerance: the band of λ's"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "random.evaluator.kind=supernet", "--set",
                                      "random.evaluator.supernet.checkpoint={tmp}/p.json"],
     "random.evaluator.kind: the supernet of space 'multires' cannot run a chosen architecture", _not_utf8),
    (["search", "gas"] + SEARCH + ["--target-ms", "5", "--pretrained", "{tmp}/nowhere"],
     "gas.pretrained: {tmp}/nowhere: not found"),
    # eval / predict
    (["eval", "{tmp}/m.pt", "--data", "synthetic", "--base-size", "0x5"], "0x5", _checkpoint),
    (["predict", "{tmp}/m.pt", "{tmp}/x.png", "--alpha", "5", "--out", "{tmp}/p"], "--alpha", _image),
    (["predict", "{tmp}/m.pt", "{tmp}/x.png", "--out", "{tmp}/taken"], "taken", _existing_file),
    (["predict", "{tmp}/m.pt", "{tmp}/none.png", "--out", "{tmp}/p"], "none.png", _checkpoint),
    (["predict", "{tmp}/m.pt", "{tmp}/frames", "--out", "{tmp}/runs/pred"], "f1.png", _frames_one_damaged),
    (["eval", "{tmp}/m.pt", "--data", "folder", "--data-root", "{tmp}/named"], "first difference: 'c' vs 'car'",
     _other_class_names),
    (["train"] + SYN + ["--arch", "{tmp}/v.json"], "v.json: field 'version': 99", _arch_newer),
    (["report", "{tmp}/rr", "--no-latency", "--samples", "0"], "search_result.json: expected an object",
     _damaged_search_result),
    (["train"] + SYN + ["--arch", "{tmp}/sp.json"], "sp.json: field 'space' must be a space name", _arch_newer),
    (["eval", "{tmp}/m.pt", "--data", "synthetic", "--batch-size", "0"], "--batch-size", _checkpoint),
    (["eval", "{tmp}/best.pt", "--data", "synthetic", "--raw"], "best.pt", _ema_best),
    # demo
    (["demo", "--minutes", "0", "--out-dir", OUT], "--minutes"),
    (["demo", "--minutes", "-1", "--out-dir", OUT], "--minutes"),
    (["demo", "--target-fps", "0", "--out-dir", OUT], "--target-fps (latency.target_fps): Input should be greater"),
    (["demo", "--target-fps", "30", "--target-ms", "5", "--out-dir", OUT], "give only one of latency.target_ms"),
    # bench / export
    (["bench", "-m", "{tmp}/m.onnx", "--backend", "eager"], "m.onnx: an ONNX file is measured on onnxruntime only, "
     "not eager (add -b onnxruntime)", _onnx_files),
    (["eval", "{tmp}/m.onnx", "--data", "synthetic"], "m.onnx: an ONNX export, not a segnas checkpoint", _onnx_files),
    (["predict", "{tmp}/m.onnx", "{tmp}/m.onnx"], "m.onnx: an ONNX export, not a segnas checkpoint", _onnx_files),
    (["export", "{tmp}/m.onnx", "--out", "{tmp}/y.onnx"], "m.onnx: an ONNX export: give the checkpoint", _onnx_files),
    (["export", "{tmp}/bad.onnx", "--out", "{tmp}/y.pt", "--format", "torchscript", "--size", "32x48"],
     "bad.onnx: an ONNX export", _onnx_files),
    (["export", "{tmp}/m.onnx", "--out", "{tmp}/y.pt"], "--out: {tmp}/y.pt: an ONNX file must end in .onnx"),
    (["bench", "-m", "{tmp}/bad.onnx"], "bad.onnx", _onnx_files),
    (["bench", "-m", "nope_net", "--size", "32x48"], "nope_net"),
    (["bench", "-m", "{tmp}/m.ts.pt", "--size", "32x48"], "m.ts.pt: a TorchScript export", _torchscript_file),
    (["export", "{tmp}/run", "--out", "{tmp}/m.onnx", "--size", "32x48"], "run: no checkpoints/best.pt: give a checkpoint, a finished training",
     _torchscript_file),
    (["bench", "-m", "fast_scnn", "--size", "32by48"], "32by48"),
    (["bench", "-m", "fast_scnn", "--size", "32x48", "--classes", "0"], "--classes"),
    (["bench", "-m", "fast_scnn", "--size", "32x48", "--threads", "0"], "--threads"),
    (["export", "fast_scnn", "--out", "{tmp}/m.onnx", "--format", "tflite", "--size", "32x48"], "tflite"),
    (["export", "fast_scnn", "--out", "{tmp}/m.txt", "--size", "32x48"], "must end in .onnx"),
    (["export", "fast_scnn", "--out", "{tmp}/m.onnx", "--format", "torchscript", "--size", "32x48"], "must end in .pt"),
    (["export", "fast_scnn", "--out", "{tmp}/taken/m.onnx", "--size", "32x48"], "taken is a file", _other_runs),
    (["export", "fast_scnn", "--out", "{tmp}/m.onnx", "--size", "32x48", "--tolerance", "-1"], "--tolerance"),
    # output folders and runs of another kind
    (["train"] + SYN + ["--out-dir", "{tmp}/taken"], "--out-dir", _other_runs),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--out-dir", "{tmp}/taken/x"], "a file", _other_runs),
    (["search", "saswot", "--resume", "{tmp}/searchrun"], "segnas search random --resume", _other_runs),
    (["train", "--resume", "{tmp}/searchrun"], "a search run, not a training run; continue it with segnas search random "
                                               "--resume", _other_runs),
    (["compare", "--resume", "{tmp}/searchrun"], "a search run, not a comparison run", _other_runs),
    (["compare", "--resume", "{tmp}/cmprun", "--set", "workers=2"], "drop workers (a resumed run takes anew only "
     "data.root", _comparison_run),
    (["compare", "--resume", "{tmp}/cmprun", "--set", "workers=2"], "how many jobs run at once is compare's --workers "
     "option", _comparison_run),
    (["search", "saswot", "--resume", "{tmp}/nowhere"], "not found"),
    (["search", "random", "--resume", "{tmp}/broken"], "broken/config.yaml: line 2 invalid YAML", _broken_run),
    (["train", "--resume", "{tmp}/edited", "--data-root", "{tmp}"], "data.root (--data-root): the synthetic dataset",
     _edited_run),
    (["eval", "{tmp}/m.pt", "--data", "synthetic", "--data-root", "{tmp}"], "--data-root (root): the synthetic dataset",
     _checkpoint),
    (["train", "--resume", "{tmp}/edited"], "edited/config.yaml: optim.lr was 0.05 when the run started and is 0.1 now",
     _edited_lr),
    (["train", "--resume", "{tmp}/broken"], "broken/config.yaml: line 2 invalid YAML", _broken_run),
    # proxies found unknown before any latency work
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--proxy", "nosuch"], "saswot.scoring.proxy (--proxy)"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--proxy", "nosuch"], "random.evaluator.proxy.proxy"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--proxy", "swap"],
     "saswot.scoring.images: swap needs at least 24 images, got 8"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--proxy", "jacob_cov", "--set",
                                      "random.evaluator.proxy.batch_size=1"],
     "random.evaluator.proxy.images: jacob_cov needs at least 2 images per batch, got 1"),
    (["proxy", "score", "fast_scnn", "-p", "swap"], "--images: swap needs at least 24 images, got 8"),
    # the proxy's images: a split the dataset lacks, more images than it holds, a size beyond memory
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "saswot.scoring.split=nosuch"],
     "saswot.scoring.split: synthetic: unknown split 'nosuch'"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "data.options={length: 6}", "--set",
                                      "random.evaluator.proxy.images=9"],
     "random.evaluator.proxy.images: 9 images, but split 'train' holds 6; set random.evaluator.proxy.images to 6"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "saswot.scoring.size=[100000, 100000]"],
     "saswot.scoring.size: a forward pass of 8 × 100000x100000"),
    (["proxy", "score", "fast_scnn", "--data", "synthetic", "--images", "300"], "--images: 300 images, but the split holds 256"),
    (["export", "fast_scnn", "--out", "{tmp}/m.pt", "--format", "torchscript", "--dynamic", "--size", "32x48"],
     "--dynamic"),
    # found before the work, not part-way through it
    (["train"] + SYN + ["--set", "loss.class_weights=[1, 2]"], "loss.class_weights: 2 weights for the dataset's"),
    (["train"] + SYN + ["--set", "device=cuda:99"], "device: 'cuda:99'"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "final.overrides={data: {focus_classes: [nosuch], focus_prob: 0.5}}"],
     "final.overrides: data.focus_classes: 'nosuch'"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "device=cuda:99"], "device: 'cuda:99'"),
    (["proxy", "score", "fast_scnn", "--seed", "-1"], "--seed"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--seed", "-1"], "seed"),
    (["demo", "--size", "100000x100000"], "--size: a forward pass of 1 × 100000x100000"),
    # FasterSeg's student is distilled from its teacher: a teacher of the user's own is refused before the search
    (["search", "fasterseg"] + SEARCH + ["--target-ms", "5", "--set", "final.overrides.loss.teacher_model=fast_scnn"],
     "final.overrides: loss: give loss.teacher"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--proxy", "{tmp}/p.json"],
     "saswot.scoring.proxy (--proxy): ", _not_utf8),
    (["bench", "-m", "fast_scnn", "-m", "{tmp}/fixed.onnx", "--size", "64x96"], "give --size 32x48", _onnx_fixed_size),
    (["bench", "-m", "fast_scnn", "--size", "32x48", "--device", "cuda:99"], "device: 'cuda:99'"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "random.evaluator.kind=train", "--proxy", "synflow"],
     "random.evaluator.proxy: settings of the proxy evaluator, which is not used (kind: train)"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "random.evaluator.kind=train", "--set",
                                      "random.evaluator.train.recipe={optim: {lr: -1}}"],
     "random.evaluator.train.recipe: optim.lr"),
    (["train"] + SYN + ["--arch", "{tmp}/a16.json"], "a16.json: not a UTF-8 text file", _not_utf8),
    # shared settings a method would not use (device=cuda:99 fails fast should they be let through)
    (["search", "fasterseg"] + SEARCH + ["--target-ms", "5", "--workers", "2", "--set", "device=cuda:99"],
     "workers (--workers): not used by segnas search fasterseg"),
    (["search", "gas"] + SEARCH + ["--target-ms", "5", "--executor", "ray", "--set", "device=cuda:99"],
     "executor (--executor): not used by segnas search gas"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--search-size", "32x48", "--set", "device=cuda:99"],
     "search_size (--search-size): not used by segnas search random"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--search-size", "32x48", "--set", "device=cuda:99"],
     "search_size (--search-size): not used by segnas search saswot"),
    (["search", "rl"] + SEARCH + ["--target-ms", "5", "--sync-bn", "--set", "device=cuda:99"],
     "sync_bn (--sync-bn): not used by segnas search rl"),
    (["search", "ssr"] + SEARCH + ["--target-ms", "5", "--target-gflops", "2", "--set", "device=cuda:99"],
     "--target-gflops (ssr.target_gflops): used only with resource 'flops'"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--ray-address", "auto", "--set", "device=cuda:99"],
     "ray_address (--ray-address): used only with executor ray (executor: process)"),
    (["search", "saswot"] + SEARCH + ["--target-ms", "5", "--set", "bf16=true", "--set", "device=cuda:99"],
     "bf16: not used by segnas search saswot"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--final-steps", "50", "--set", "final.epochs=0",
                                      "--set", "device=cuda:99"],
     "--final-steps (final.steps): a setting of the final training, which epochs 0 turns off"),
    (["search", "supernet"] + SEARCH + ["--target-ms", "5", "--pretrained", "{tmp}", "--epochs", "3",
                                        "--set", "device=cuda:99"],
     "--epochs (supernet.epochs): a setting of the supernet's training, which pretrained"),
    (["train"] + SYN + ["--set", "data.scale=[0.5, 2.0]"], "data.scale: random scaling (0.5-2) is applied before"),
    (["train", "--arch", "{tmp}/a.json", "--data", "synthetic", "--set", "model.options={width: 0.5}"],
     "model.options: keyword arguments of a zoo network"),
    (["train"] + SYN + ["--set", "optim.name=adamw", "--set", "optim.momentum=0.5"],
     "optim.momentum: SGD's; the adamw optimizer uses betas"),
    (["train"] + SYN + ["--set", "optim.schedule=cosine", "--set", "optim.power=2"], "optim.power: the poly schedule's"),
    (["train"] + SYN + ["--set", "loss.kind=ce", "--set", "loss.ohem_min_kept=10"], "loss.ohem_min_kept: OHEM's"),
    (["train"] + SYN + ["--set", "swa_bn_batches=4"], "swa_bn_batches: SWA's BatchNorm re-estimate"),
    (["train"] + SYN + ["--set", "optim.schedule=constant", "--set", "optim.min_lr_ratio=0.1"],
     "optim.min_lr_ratio: the floor of a decaying learning rate"),
    (["train"] + SYN + ["--set", "loss.kd_temperature=2"], "loss.kd_temperature: a setting of distillation, which "
                                                            "needs a teacher"),
    (["train"] + SYN + ["--set", "loss.teacher_steps=50"], "loss.teacher_steps: the training of a loss.teacher_model"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "final.overrides={loss: {kd_weight: 2}}"],
     "final.overrides: loss.kd_weight: a setting of distillation, which needs a teacher (loss.teacher or "
     "loss.teacher_model), and segnas search random hands its final training none"),
    (["train"] + SYN + ["--set", "data.val_split=null", "--set", "eval_every=2"],
     "eval_every: how often the validation split is scored, and data.val_split names none"),
    (["search", "random"] + SEARCH + ["--target-ms", "5", "--set", "final.overrides={swa_bn_batches: 16}",
                                      "--set", "device=cuda:99"], "swa_bn_batches: SWA's BatchNorm re-estimate"),
    (["compare", "--status", "{tmp}", "--workers", "2"], "--status only shows where a comparison stands"),
    (["compare", "--resume", "{tmp}", "--measure-now", "--no-latency"], "--measure-now (measure_now) runs the latency session"),
]

def _folder_data(tmp_path, name, palette=False):
    """A folder dataset at {tmp}/<name> (train and val, 3 pairs each, classes in dataset.yaml); returns
    its root. The second training pair is the one the cases damage."""
    import yaml

    root = tmp_path / name
    colors = np.array([[0, 0, 0], [128, 64, 128], [0, 0, 142]], np.uint8)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for k in range(3):
            rng = np.random.default_rng(k)
            Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(root / "images" / split / f"i{k}.png")
            ids = np.arange(20)[None, :].repeat(16, 0) % 3
            mask = Image.fromarray(colors[ids]) if palette else Image.fromarray(ids.astype(np.uint8), "L")
            mask.save(root / "masks" / split / f"i{k}.png")
    desc = {"classes": ["a", "b", "c"], **({"palette": colors.tolist()} if palette else {})}
    (root / "dataset.yaml").write_text(yaml.safe_dump(desc))
    return root


def _truncated_image(tmp_path):
    path = _folder_data(tmp_path, "truncated") / "images" / "train" / "i1.png"
    path.write_bytes(path.read_bytes()[:200])


def _size_mismatch(tmp_path):
    root = _folder_data(tmp_path, "mismatch")
    Image.fromarray(np.zeros((16, 28), np.uint8), "L").save(root / "masks" / "train" / "i1.png")


def _label_out_of_range(tmp_path):
    root = _folder_data(tmp_path, "labels")
    Image.fromarray(np.full((16, 20), 7, np.uint8), "L").save(root / "masks" / "train" / "i1.png")


def _palette_colour_missing(tmp_path):
    root = _folder_data(tmp_path, "palette", palette=True)
    Image.fromarray(np.full((16, 20, 3), 9, np.uint8)).save(root / "masks" / "train" / "i1.png")


def _corrupt_last_checkpoint(tmp_path):
    """A run directory at {tmp}/run whose only checkpoint (last.pt, no last.prev.pt) is damaged."""
    from segnas.config import TrainConfig
    from segnas.training.start import save_settings

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_settings(TrainConfig.model_validate({"data": {"options": {"size": [32, 40], "length": 4}}, "progress": False,
                                              "out_dir": str(tmp_path / "runs")}), run)  # (as a run has them)
    (run / "checkpoints" / "last.pt").write_bytes(b"\x00" * 64)


class _RunsCode:
    """Pickles as a call of ``exec``: loading it with weights_only=False would run the code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _pickled_callable_checkpoint(tmp_path):
    _checkpoint(tmp_path)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**state, "payload": _RunsCode(tmp_path / "ran.txt")}, tmp_path / "evil.pt")


def _folder(name):
    return ["--data", "folder", "--data-root", "{tmp}/" + name, "--epochs", "1", "--set", "progress=false",
            "--out-dir", OUT]


#: Mistakes in datasets and machine files (data validation, memory estimate, checkpoints, machine.json).
DATA_CASES = [
    # found by the up-front data check, before a run directory exists (not mid-epoch)
    (["train"] + _folder("truncated"), "truncated/images/train/i1.png", _truncated_image),
    (["train"] + _folder("mismatch"), "mismatch/masks/train/i1.png", _size_mismatch),
    (["train"] + _folder("labels"), "[7]", _label_out_of_range),
    (["train"] + _folder("palette"), "(9, 9, 9)", _palette_colour_missing),
    # the memory estimate, before allocating
    (["train"] + SYN + ["--size", "100000x100000"], "100000x100000"),
    # checkpoints
    (["train", "--resume", "{tmp}/run"], "last.pt: not a readable segnas checkpoint (UnpicklingError); there is no earlier",
     _corrupt_last_checkpoint),
    (["eval", "{tmp}/evil.pt", "--data", "synthetic"], "evil.pt: refused", _pickled_callable_checkpoint),
    # a split scored later is checked before the first image is scored
    (["eval", "{tmp}/m.pt", "--data", "folder", "--data-root", "{tmp}/truncated", "--split", "train"],
     "truncated/images/train/i1.png", lambda tmp: (_checkpoint(tmp), _truncated_image(tmp))),
]


def _id(case) -> str:
    return " ".join(case[0][:1] + [a for a in case[0][1:] if a not in SYN and a not in SEARCH])[:60]


@pytest.mark.parametrize("case", CLI_CASES + DATA_CASES, ids=[_id(c) for c in CLI_CASES + DATA_CASES])
def test_bad_input_is_one_line_exit_2(case, tmp_path, monkeypatch):
    args, needle, *rest = case
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    if rest and rest[0] is not None:
        rest[0](tmp_path)
    runs = tmp_path / "runs"
    before = set(runs.rglob("*")) if runs.exists() else set()
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert needle.replace("{tmp}", str(tmp_path)) in lines[0], output
    new_dirs = [p for p in (set(runs.rglob("*")) if runs.exists() else set()) - before if p.is_dir()]
    assert not new_dirs, f"run directories left behind: {new_dirs}"
    assert not (tmp_path / "ran.txt").exists(), "code pickled into a checkpoint ran"


def test_settings_refused_as_idle_still_load_from_a_run_directory():
    """A run an earlier segnas started with a setting now refused as doing nothing still resumes:
    the checks apply to a user's settings for a new run only, not to a run directory's or to those
    segnas derives from them (a search's final training, a comparison's jobs)."""
    from segnas.config.io import build_config
    from segnas.config.train import TrainConfig
    from segnas.errors import SegnasError

    idle = {"optim": {"name": "adamw", "momentum": 0.5}, "loss": {"ohem_min_kept": 2}, "swa_bn_batches": 4,
            "data": {"scale": [0.5, 2.0]}, "model": {"name": None, "arch": "a.json", "options": {"w": 1}}}
    with pytest.raises(SegnasError, match="data.scale: .* leave it out .and 3 more errors"):
        build_config(TrainConfig, idle, new=True)
    for cfg in (build_config(TrainConfig, idle, saved=True), TrainConfig.model_validate(idle)):
        assert cfg.optim.momentum == 0.5 and cfg.swa_bn_batches == 4
    from segnas.config.search import FinalTraining

    with pytest.raises(SegnasError, match="swa_bn_batches"):
        build_config(FinalTraining, {"overrides": {"swa_bn_batches": 16}}, new=True)
    assert FinalTraining.model_validate({"overrides": {"swa_bn_batches": 16}}).overrides == {"swa_bn_batches": 16}


def test_values_an_earlier_segnas_took_still_load_from_a_run_directory():
    """The range checks (``Bounds``, finite numbers, the scale range) apply to a user's settings for a
    new run; a run directory's settings load as saved, so that a run under way always resumes."""
    from segnas.config.io import build_config
    from segnas.config.train import TrainConfig
    from segnas.errors import SegnasError

    old = {"optim": {"power": -0.5}, "time_budget_min": float("inf"), "loss": {"class_weights": [1.0, -1.0]},
           "data": {"scale": [1.5, 0.75], "crop_size": [32, 32]}}
    cfg = build_config(TrainConfig, old, saved=True)
    assert cfg.optim.power == -0.5 and cfg.data.scale == (1.5, 0.75) and cfg.loss.class_weights == [1.0, -1.0]
    with pytest.raises(SegnasError, match=r"data.scale: a range .*\[and 2 more errors\]"):
        build_config(TrainConfig, old, new=True)


def test_true_or_false_is_refused_where_a_setting_is_not_a_switch():
    """pydantic reads ``true`` as the number 1: ``max_steps: true`` trained one step. A user's settings
    take true/false only in switches (``bf16``), at any depth; a run directory's load as saved."""
    from segnas.config.io import build_config
    from segnas.config.train import TrainConfig
    from segnas.errors import SegnasError

    with pytest.raises(SegnasError, match=r"max_steps: expected a number, got true \(true and false are for on/off"):
        build_config(TrainConfig, {"max_steps": True}, new=True)
    with pytest.raises(SegnasError, match="optim.lr: expected a number, got false"):
        build_config(TrainConfig, {"optim": {"lr": False}}, new=True)
    assert build_config(TrainConfig, {"bf16": True, "max_steps": 3}, new=True).bf16 is True
    assert build_config(TrainConfig, {"max_steps": True}, saved=True).max_steps == 1


def test_a_settings_file_may_share_settings_with_yaml_anchors(tmp_path):
    """A key given twice is refused, but a merge (``<<: *anchor``) whose keys the mapping overrides is not."""
    from segnas.config.io import read_yaml

    path = tmp_path / "s.yaml"
    path.write_text("base: &b {lr: 0.1, momentum: 0.8}\noptim: {<<: *b, lr: 0.2}\n")
    assert read_yaml(path)["optim"] == {"lr": 0.2, "momentum": 0.8}


def test_distillation_settings_pass_where_a_teacher_comes():
    """kd settings are refused only where no teacher comes: FasterSeg hands its student one, and
    ``segnas train`` takes them with a teacher."""
    from segnas.config import TrainConfig
    from segnas.config.io import build_config
    from segnas.jobs.search import check_final_training, make_settings

    s = make_settings("fasterseg", {"final": {"overrides": {"loss": {"kd_temperature": 2.0}}}}, new=True)
    check_final_training(s, ["road", "car"], with_teacher=True)
    build_config(TrainConfig, {"loss": {"teacher": "t.pt", "kd_weight": 2.0}}, new=True)
    build_config(TrainConfig, {"loss": {"teacher_model": "fast_scnn", "teacher_steps": 5}}, new=True)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_nothing_can_be_made_in_is_refused_before_the_work(tmp_path, monkeypatch):
    """Permissions alone said yes to root under /proc and /sys: export, report, eval --json and
    bench --json then ran and died on a traceback as they wrote. A file is made and removed to know."""
    import os

    from segnas.errors import SegnasError
    from segnas.utils import check_output_file, folder_to_write

    monkeypatch.setattr(os, "access", lambda *a, **k: True)  # (as root: permissions say yes)

    assert folder_to_write("/proc/segnas/x") == (Path("/proc"), "not writable")
    with pytest.raises(SegnasError, match=r"^--out /proc/x/model.onnx: cannot write in /proc$"):
        check_output_file("/proc/x/model.onnx", "--out")
    assert folder_to_write(tmp_path / "a" / "b") == (tmp_path, None) and not list(tmp_path.iterdir())


def test_an_architecture_file_given_for_a_checkpoint_is_named_as_such(tmp_path):
    from segnas.engine.checkpoint import load_checkpoint
    from segnas.errors import SegnasError

    arch = tmp_path / "arch.json"
    arch.write_text("{}")
    with pytest.raises(SegnasError, match=r"arch.json: a JSON file, not a segnas checkpoint: an architecture file is a "
                                          r"network to train \(segnas train --arch; model.arch\)"):
        load_checkpoint(arch)
