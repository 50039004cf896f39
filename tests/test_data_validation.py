"""Bad data is refused before a run directory exists (issue 30): every image/label pair is checked
up front, in parallel, cached by file size and mtime; a data error in a loader worker is the same
one line; a training batch the machine cannot hold is refused with the memory estimate."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segnas.data.validate as validate_module
from segnas.config.train import DataConfig, TrainConfig
from segnas.data import validate_dataset
from segnas.data.base import PairDataset
from segnas.engine.step import train_loader
from segnas.errors import SegnasError
from segnas.training import train_job

H, W = 32, 40
CLASSES = ["background", "road", "car"]
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))


def make_folder(root: Path, n: int = 4, palette: bool = False, ext: str = ".png") -> None:
    """A folder dataset with train and val splits of ``n`` good pairs each."""
    rng = np.random.default_rng(0)
    colors = np.array(PALETTE, dtype=np.uint8)
    for split in ("train", "val"):
        for k in range(n):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / split / f"img{k}{ext}")
            ids = (np.arange(W)[None, :].repeat(H, 0) + k) % 3
            mask = Image.fromarray(colors[ids]) if palette else Image.fromarray(ids.astype(np.uint8), "L")
            mask.save(root / "masks" / split / f"img{k}.png")


def folder_cfg(tmp_path: Path, root: Path, palette: bool = False, **extra) -> TrainConfig:
    options = {"classes": CLASSES, **({"palette": PALETTE} if palette else {})}
    return TrainConfig.model_validate({
        "job": "t", "data": {"name": "folder", "root": str(root), "options": options, "batch_size": 2,
                             "eval_batch_size": 2, **extra.pop("data", {})},
        "model": {"name": "fast_scnn", "options": {"width": 0.5}}, "epochs": 1, "threads": 1,
        "progress": False, "out_dir": str(tmp_path / "runs"), **extra})


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def resize_mask(path: Path) -> None:
    Image.fromarray(np.zeros((H, W + 8), np.uint8), "L").save(path)


def undeclared_label(path: Path) -> None:
    Image.fromarray(np.full((H, W), 7, np.uint8), "L").save(path)


def jpeg_mask(path: Path) -> None:
    """The mask saved as JPEG (its values then differ along edges): refused by its content, whatever its name."""
    Image.fromarray(((np.arange(W)[None, :].repeat(H, 0) // 8) % 3).astype(np.uint8), "L").save(path, format="JPEG")


def foreign_colour(path: Path) -> None:
    Image.fromarray(np.full((H, W, 3), 9, np.uint8)).save(path)


BAD_DATA = [
    # (what, which file of the second training pair to damage, palette, image extension, message parts)
    ("truncated png", truncate, "images", False, ".png", ["img1.png", "cannot read image", "runcated"]),
    ("truncated jpeg", truncate, "images", False, ".jpg", ["img1.jpg", "cannot read image", "truncated"]),
    ("size mismatch", resize_mask, "masks", False, ".png", ["masks/train/img1.png", "48x32", "40x32"]),
    ("label out of range", undeclared_label, "masks", False, ".png", ["masks/train/img1.png", "[7]"]),
    ("jpeg mask", jpeg_mask, "masks", False, ".png", ["masks/train/img1.png", "a JPEG mask", "save masks losslessly"]),
    ("palette colour missing", foreign_colour, "masks", True, ".png",
     ["masks/train/img1.png", "(9, 9, 9)", "not in the palette"]),
]


@pytest.mark.parametrize("what, damage, folder, palette, ext, parts", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_file_is_refused_before_the_run_directory_is_created(tmp_path, what, damage, folder, palette, ext,
                                                                  parts):
    """Today these surface mid-epoch (the first pair is fine, so the dataset opens) and leave a run
    directory behind."""
    root = tmp_path / "ds"
    make_folder(root, palette=palette, ext=ext)
    damage(root / folder / "train" / (f"img1{ext}" if folder == "images" else "img1.png"))
    with pytest.raises(SegnasError) as info:
        train_job(folder_cfg(tmp_path, root, palette))
    msg = str(info.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, msg
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_bad_validation_split_is_refused_up_front_too(tmp_path):
    root = tmp_path / "ds"
    make_folder(root)
    undeclared_label(root / "masks" / "val" / "img2.png")
    with pytest.raises(SegnasError, match=r"masks/val/img2\.png.*\[7\]"):
        train_job(folder_cfg(tmp_path, root))
    assert not (tmp_path / "runs").exists()


def test_whole_images_of_different_sizes_in_one_batch_are_refused_up_front(tmp_path):
    root = tmp_path / "ds"
    make_folder(root)
    for folder, mode in (("images", "RGB"), ("masks", "L")):  # one training pair at half the size
        path = root / folder / "train" / "img3.png"
        Image.open(path).convert(mode).resize((W // 2, H // 2), Image.NEAREST).save(path)
    with pytest.raises(SegnasError, match=rf"data.crop_size: the train images differ in size \({H}x{W}, "
                                          rf"{H // 2}x{W // 2}\), so whole images cannot form batches of 2"):
        train_job(folder_cfg(tmp_path, root))
    assert not (tmp_path / "runs").exists()
    train_job(folder_cfg(tmp_path, root, data={"crop_size": [H // 2, W // 2]}, max_steps=1))  # crops: fine


def test_checks_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root)
    calls = []
    real = PairDataset.check_pair
    monkeypatch.setattr(PairDataset, "check_pair", lambda self, i: calls.append(i) or real(self, i))
    cfg = DataConfig(name="folder", root=str(root), options={"classes": CLASSES})
    report = validate_dataset(cfg, progress=False)
    assert len(calls) == 8 and report.splits["train"].read == 4 and report.splits["train"].max_size == (H, W)
    assert list((tmp_path / "cache" / "datasets").glob("*.json"))

    calls.clear()
    t0 = time.perf_counter()
    report = validate_dataset(cfg, progress=False)
    assert calls == [] and report.splits["train"].read == 0 and report.splits["val"].samples == 4
    assert report.splits["train"].max_size == (H, W)
    assert time.perf_counter() - t0 < 2.0

    # a changed file (new mtime) is read again, and a bad change is found
    mask = root / "masks" / "train" / "img3.png"
    undeclared_label(mask)
    os.utime(mask, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(SegnasError, match="img3.png"):
        validate_dataset(cfg, progress=False)
    assert calls == [3]

    # other classes: other checks (label 2 is no longer declared), not the cached answer
    make_folder(tmp_path / "ds2")
    cfg2 = DataConfig(name="folder", root=str(tmp_path / "ds2"), options={"classes": CLASSES})
    validate_dataset(cfg2, progress=False)
    with pytest.raises(SegnasError, match=r"\[2\]"):
        validate_dataset(cfg2.model_copy(update={"options": {"classes": CLASSES[:2]}}), progress=False)


def test_pairs_are_checked_in_parallel_with_a_progress_bar_on_large_datasets(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root, n=6)
    threads = set()
    real = PairDataset.check_pair

    def slow_check(self, i):
        threads.add(threading.get_ident())
        time.sleep(0.05)
        return real(self, i)

    monkeypatch.setattr(PairDataset, "check_pair", slow_check)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    bars = []

    class FakeBar:
        def __init__(self):
            self.total, self.done = 0, 0

        def add_task(self, description, total, info):
            self.total = total
            return 0

        def update(self, task, advance):
            self.done += advance

    from contextlib import contextmanager

    @contextmanager
    def fake_progress(enabled=True):
        bar = FakeBar() if enabled else None
        bars.append(bar)
        yield bar

    monkeypatch.setattr(validate_module, "progress_bar", fake_progress)
    monkeypatch.setattr(validate_module, "LARGE", 5)
    lines = []
    validate_dataset(DataConfig(name="folder", root=str(root), options={"classes": CLASSES}), True, lines.append)
    assert len(threads) == 2
    assert [(b.total, b.done) for b in bars] == [(6, 6), (6, 6)]
    assert lines and "checking 6 image/label pairs" in lines[0]


def test_synthetic_data_needs_no_reading(tmp_path):
    report = validate_dataset(DataConfig(options={"size": [24, 32], "length": 3}), progress=False)
    assert report.splits["train"].max_size == (24, 32) and report.splits["train"].samples == 3


# ------------------------------------------------------------------------ loader workers
class _FailingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise SegnasError("/data/img2.png: cannot read image (OSError: image file is truncated)")
        return torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_a_loader_worker_is_one_line(workers):
    """With workers, DataLoader re-raises the error with the worker's whole traceback in its message."""
    loader = train_loader(_FailingDataset(), 1, torch.Generator().manual_seed(0), workers)
    with pytest.raises(SegnasError) as info:
        for _ in loader:
            pass
    assert str(info.value) == "/data/img2.png: cannot read image (OSError: image file is truncated)"


def test_worker_error_line_leaves_other_messages_alone():
    from segnas.engine.step import worker_error_line

    assert worker_error_line("data.crop_size: bad") == "data.crop_size: bad"


def test_training_with_workers_reports_a_file_that_broke_after_the_check_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root)
    real = PairDataset.load_arrays

    def breaks_later(self, index):  # passes the up-front check, fails when a worker reads it
        if index == 1:
            raise SegnasError(f"{self.pairs[1][0]}: cannot read image (OSError: image file is truncated)")
        return real(self, index)

    monkeypatch.setattr(PairDataset, "load_arrays", breaks_later)
    with pytest.raises(SegnasError) as info:
        train_job(folder_cfg(tmp_path, root, data={"workers": 1, "crop_size": [H, W]}))
    assert str(info.value) == f"{root / 'images' / 'train' / 'img1.png'}: cannot read image (OSError: image file is truncated)"


# ------------------------------------------------------------------------ memory estimate
def test_a_huge_training_size_is_refused_before_allocating_with_the_estimate(tiny_cfg, tmp_path):
    cfg = TrainConfig.model_validate(tiny_cfg(**{"data.crop_size": [100000, 100000]}))
    with pytest.raises(SegnasError) as info:
        train_job(cfg)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("data.crop_size:") and "100000x100000" in msg
    assert "TB" in msg and "available" in msg and "activations" in msg
    assert not (tmp_path / "runs").exists()


def test_memory_estimate_scales_a_measured_forward_and_leaves_the_network_alone(monkeypatch):
    import segnas.cost.memory as memory
    from segnas.zoo import build_model

    model = build_model("fast_scnn", 3, width=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    small = memory.training_memory(model, 2, (64, 64))
    large = memory.training_memory(model, 4, (256, 320))
    assert small.activation_bytes > 0
    # linear in the pixels: 4·256·320 = 40 × 2·64·64
    assert large.activation_bytes == pytest.approx(40 * small.activation_bytes, rel=1e-6)
    assert large.input_bytes == 4 * 256 * 320 * 2 * (3 * 4 + 8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and model.training

    # measured at 64x64, the estimate is close to what a forward at the real size keeps
    saved = []
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        model(torch.zeros(2, 3, 128, 160))
    own = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers()]}
    real = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
                if t.untyped_storage().data_ptr() not in own}.values())
    assert memory.training_memory(model, 2, (128, 160)).activation_bytes == pytest.approx(real, rel=0.25)

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 10 * 2**20)
    with pytest.raises(SegnasError, match=r"data.base_size: .*2 × 256x320.*10\.0 MB of memory available"):
        memory.check_training_memory(model, 2, (256, 320), "data.base_size")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 2**30)
    assert memory.check_training_memory(model, 2, (256, 320)).total_bytes < 64 * 2**30


def test_training_and_eval_name_a_class_no_validation_mask_holds(tmp_path):
    root = tmp_path / "data"
    make_folder(root, n=2)
    for mask in (root / "masks" / "val").iterdir():  # 'car' (2) in no validation mask
        Image.fromarray((np.arange(W)[None, :].repeat(H, 0) % 2).astype(np.uint8), "L").save(mask)
    lines: list[str] = []
    result = train_job(folder_cfg(tmp_path, root, max_steps=1), echo=lines.append)
    note = "note: no val mask holds class(es) 'car' (2): mIoU leaves it out"
    assert sum(x.startswith(note) for x in lines) == 1
    from segnas.jobs.evaluate import eval_job

    lines.clear()
    eval_job(Path(result.run_dir) / "checkpoints" / "best.pt", "folder", str(root), "val",
             options={"classes": CLASSES}, progress=False, echo=lines.append)
    assert sum(x.startswith(note) for x in lines) == 1


def test_a_search_says_each_data_note_once_though_its_final_training_checks_the_data_again(tmp_path):
    from segnas.jobs.search import make_settings, search_job

    root = tmp_path / "data"
    make_folder(root, n=2)
    for mask in (root / "masks" / "val").iterdir():  # 'car' (2) in no validation mask
        Image.fromarray((np.arange(W)[None, :].repeat(H, 0) % 2).astype(np.uint8), "L").save(mask)
    scoring = {"proxy": "nwot", "images": 2, "batch_size": 2, "size": [H, W]}
    settings = {"data": {"name": "folder", "root": str(root), "options": {"classes": CLASSES}, "batch_size": 2,
                         "eval_batch_size": 2, "crop_size": [H, W]},
                "latency": {"backend": "eager", "target_ms": 1e9, "size": [H, W], "table_min_runs": 1,
                            "table_min_time_s": 0.0, "calibration_networks": 0},
                "random": {"space_options": {"layers": 6, "base_width": 4}, "candidates": 2, "top_k": 1,
                           "evaluator": {"proxy": scoring}},
                "final": {"steps": 1}, "threads": 1, "progress": False, "out_dir": str(tmp_path / "runs")}
    lines: list[str] = []
    search_job(make_settings("random", settings), echo=lines.append)
    assert sum(x.startswith("note: no val mask holds class(es) 'car' (2)") for x in lines) == 1


def test_a_run_resumed_on_a_dataset_that_names_other_classes_is_refused_before_any_work(tmp_path):
    """Another class count was a size-mismatch traceback; a reorder or rename resumed silently and
    gave the trained outputs the new names."""
    import json

    import yaml

    root = tmp_path / "data"
    make_folder(root)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": CLASSES}))
    cfg = TrainConfig.model_validate({**folder_cfg(tmp_path, root).model_dump(), "data": {
        "name": "folder", "root": str(root), "batch_size": 2, "eval_batch_size": 2}})
    run = Path(train_job(cfg).run_dir)
    assert json.loads((run / "classes.json").read_text()) == {"names": CLASSES}
    for names in (["background", "car", "road"], ["background", "road", "vehicle"], [*CLASSES, "bicycle"]):
        (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": names}))
        with pytest.raises(SegnasError, match=rf"(trained on classes |3 classes \()background, road, car\)?, the "
                                              rf"dataset \(data.root .*\) (names them|has 4) \(?{', '.join(names)}.*"
                                              "a resumed run keeps the classes it started with"):
            train_job(None, resume=run)
    (run / "classes.json").unlink()  # a run from before the record: its checkpoint's classes are checked
    with pytest.raises(SegnasError, match="predicts 3 classes \\(background, road, car\\)"):
        train_job(None, resume=run)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": CLASSES}))
    said = []
    train_job(None, resume=run, echo=said.append)  # the same classes: it resumes (finished: nothing to do)
    assert any("already finished" in line for line in said), said


@pytest.mark.parametrize("text, message", [
    ("classes: [background, yes, no]\n", r"classes\[1\] must be a name, got the bool True: quote the name"),
    ("classes: [0, 1, 2]\n", r"classes\[0\] must be a name, got the int 0"),
    ("classes: [a, b, c]\npalette: [#000000, #804080, #00008e]\nx: 1\n",
     r"line 2 invalid YAML .*; line 2: # starts a comment in YAML: quote a hex colour"),
])
def test_what_yaml_reads_otherwise_in_dataset_yaml_is_said(tmp_path, text, message):
    root = tmp_path / "data"
    make_folder(root)
    (root / "dataset.yaml").write_text(text)
    with pytest.raises(SegnasError, match=message):
        validate_dataset(DataConfig(name="folder", root=str(root)))
    with pytest.raises(SegnasError, match="a file, not a folder: give the dataset root folder"):
        validate_dataset(DataConfig(name="folder", root=str(root / "dataset.yaml")))


def test_a_comparison_resumed_on_a_dataset_that_names_other_classes_is_refused_before_any_work(tmp_path, monkeypatch):
    """It resumed, and its rows then held trainings of two class lists side by side."""
    import json

    import yaml

    from segnas.config.compare import CompareSettings
    from segnas.config.io import build_config
    from segnas.jobs.compare import compare_job

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_folder(root)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": CLASSES}))
    cfg = {"data": {"name": "folder", "root": str(root), "batch_size": 2, "eval_batch_size": 2, "crop_size": [H, W]},
           "latency": {"target_ms": 1e9, "size": [H, W], "backend": "eager", "table_min_runs": 1,
                       "table_min_time_s": 0.0, "calibration_networks": 0},
           "methods": {}, "zoo": ["fast_scnn"], "train": {"steps": 1, "seeds": 1}, "measure_min_runs": 2,
           "measure_min_time_s": 0.0, "threads": 1, "progress": False, "report": False,
           "out_dir": str(tmp_path / "runs")}
    run = Path(compare_job(build_config(CompareSettings, cfg))["run_dir"])
    assert json.loads((run / "classes.json").read_text()) == {"names": CLASSES}
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": ["background", "road", "vehicle"]}))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(SegnasError, match=r"trained on classes background, road, car, the dataset .* names them "
                                          r"background, road, vehicle.*a resumed run keeps the classes"):
        compare_job(None, resume=run)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
