"""Images and masks as users save them: subfolders, hidden files, 16-bit and rotated photos, binary
masks saved as 0/255, float and grey-as-colour masks; and scoring against labels at their own size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segnas.config.train import DataConfig
from segnas.data import build_dataset, eval_transforms, validate_dataset
from segnas.data.base import check_image_file, read_image, read_label
from segnas.engine.evaluate import evaluate
from segnas.errors import SegnasError
from segnas.metrics import ConfusionMatrix

from test_data_validation import CLASSES, H, W, make_folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))


def check(root: Path, echo=None, **options) -> None:
    validate_dataset(DataConfig(name="folder", root=str(root), options={"classes": CLASSES, **options}), False, echo)


def test_subfolders_pair_by_relative_path_and_hidden_files_are_left_out(tmp_path):
    make_folder(tmp_path, n=2)
    for kind, ext in (("images", ".png"), ("masks", ".png")):
        sub = tmp_path / kind / "train" / "seqA"
        sub.mkdir()
        (tmp_path / kind / "train" / f"img0{ext}").rename(sub / f"img0{ext}")
    (tmp_path / "images" / "train" / "._img1.png").write_bytes(b"\x00\x05macOS metadata")
    dataset = build_dataset("folder", str(tmp_path), "train", classes=CLASSES)
    assert sorted(img.relative_to(tmp_path / "images" / "train").as_posix() for img, _ in dataset.pairs) == \
        ["img1.png", "seqA/img0.png"]
    assert all(img.parent.name == mask.parent.name for img, mask in dataset.pairs)
    check(tmp_path)


def test_a_mask_without_its_image_is_named_and_two_images_of_one_stem_are_refused(tmp_path):
    make_folder(tmp_path, n=3)
    (tmp_path / "images" / "train" / "img1.png").unlink()
    lines: list[str] = []
    check(tmp_path, lines.append)
    assert lines == [f"note: 1 label file(s) of folder[train] at {tmp_path} have no image of their name and are "
                     "left out (first: train/img1.png)"]
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "train" / "img1.png")
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "train" / "img1.jpg")
    with pytest.raises(SegnasError, match=r"two images for stem 'img1' \(img1.jpg and img1.png\)"):
        build_dataset("folder", str(tmp_path), "train", classes=CLASSES)


def test_16_bit_grey_images_keep_their_top_byte(tmp_path):
    grey = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 40).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = read_image(tmp_path / "g16.png")
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 1], (grey >> 8).astype(np.uint8))  # OpenCV's conversion of 16 bits to 8
    Image.fromarray(np.ones((H, W), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(SegnasError, match=r"f.tif: a floating-point image"):
        check_image_file(tmp_path / "f.tif")


def test_a_photo_is_read_turned_as_its_exif_orientation_says(tmp_path):
    stored = np.zeros((H, W, 3), np.uint8)
    stored[0, 0] = 255  # the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "p.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "p.jpg")
    assert shown.shape == (W, H, 3) and check_image_file(tmp_path / "p.jpg") == (W, H)
    assert shown[0, -1].mean() > 200 and shown[0, 0].mean() < 50  # the stored corner is now top right


def test_mask_formats_users_save_by_mistake(tmp_path):
    ids = (np.arange(W)[None, :].repeat(H, 0) % 3).astype(np.uint8)
    Image.fromarray(np.repeat(ids[..., None], 3, axis=2)).save(tmp_path / "grey_rgb.png")
    with pytest.raises(SegnasError, match="its three channels are equal: save it with one channel"):
        read_label(tmp_path / "grey_rgb.png")
    Image.fromarray(ids.astype(np.float32) + 0.7).save(tmp_path / "float.tif")
    with pytest.raises(SegnasError, match=r"float.tif: label values must be whole class indices"):
        read_label(tmp_path / "float.tif")
    Image.fromarray(ids.astype(np.float32)).save(tmp_path / "whole.tif")
    assert np.array_equal(read_label(tmp_path / "whole.tif"), ids)


def test_ignore_index_values_with_a_palette_is_refused(tmp_path):
    make_folder(tmp_path, n=1, palette=True)
    with pytest.raises(SegnasError, match="'ignore_index_values' applies to index masks; with a 'palette'"):
        build_dataset("folder", str(tmp_path), "train", classes=CLASSES, palette=[[0, 0, 0], [128, 64, 128],
                                                                                   [0, 0, 142]],
                      ignore_index_values=[7])


def test_binary_masks_saved_as_0_and_255_are_refused_and_a_missing_class_is_named(tmp_path):
    make_folder(tmp_path, n=2)
    for mask in (tmp_path / "masks" / "train").iterdir():
        ids = np.asarray(Image.open(mask))
        Image.fromarray(np.where(ids == 0, 0, 255).astype(np.uint8), "L").save(mask)
    with pytest.raises(SegnasError, match=r"train masks hold pixels of fewer than two classes \(held: "
                                          r"'background' \(0\)\).*saved as 0/255 must be saved as 0/1"):
        check(tmp_path)
    for mask in (tmp_path / "masks" / "train").iterdir():  # all 0, no ignored pixel: no 0/255 hint
        Image.fromarray(np.zeros((H, W), np.uint8), "L").save(mask)
    with pytest.raises(SegnasError, match=r"fewer than two classes \(held: 'background' \(0\)\); there is "
                                          r"nothing to tell apart$"):
        check(tmp_path)
    for mask in (tmp_path / "masks" / "train").iterdir():  # now 0/1: 'car' (2) is in no mask
        Image.fromarray((np.arange(W)[None, :].repeat(H, 0) % 2).astype(np.uint8), "L").save(mask)
    lines: list[str] = []
    check(tmp_path, lines.append)
    assert lines == ["note: no train mask holds class(es) 'car' (2): the network cannot learn it"]
    lines.clear()
    check(tmp_path, lines.append)  # read back from the check cache: the same note
    assert lines == ["note: no train mask holds class(es) 'car' (2): the network cannot learn it"]


def test_a_class_no_validation_mask_holds_is_named_with_how_the_mean_counts_it(tmp_path):
    make_folder(tmp_path, n=2)
    for mask in (tmp_path / "masks" / "val").iterdir():  # 'car' (2) in no validation mask
        Image.fromarray((np.arange(W)[None, :].repeat(H, 0) % 2).astype(np.uint8), "L").save(mask)
    lines: list[str] = []
    check(tmp_path, lines.append)
    assert lines == ["note: no val mask holds class(es) 'car' (2): mIoU leaves it out where no pixel is predicted "
                     "as it, and counts an IoU of 0 where some are"]


def test_a_trainings_data_notes_are_in_its_log_though_said_before_its_run_folder_existed(tmp_path):
    from segnas import api

    make_folder(tmp_path / "data", n=2)
    for mask in (tmp_path / "data" / "masks" / "val").iterdir():  # 'car' (2) in no validation mask
        Image.fromarray((np.arange(W)[None, :].repeat(H, 0) % 2).astype(np.uint8), "L").save(mask)
    said: list[str] = []
    result = api.train({"data.name": "folder", "data.root": str(tmp_path / "data"), "data.batch_size": 2,
                        "data.options": {"classes": list(CLASSES)},
                        "model.options.width": 0.5, "max_steps": 1, "threads": 1, "progress": False,
                        "out_dir": str(tmp_path / "runs")}, echo=said.append)
    note = next(line for line in said if line.startswith("note: no val mask holds class(es) 'car'"))
    assert note in (Path(result.run_dir) / "log.txt").read_text()


def test_a_crop_larger_than_every_image_even_at_the_largest_scale_is_noted(tmp_path):
    from segnas import api

    make_folder(tmp_path / "data", n=2)
    settings = {"data.name": "folder", "data.root": str(tmp_path / "data"), "data.options": {"classes": list(CLASSES)},
                "data.batch_size": 2, "model.options.width": 0.5, "max_steps": 1, "threads": 1, "progress": False,
                "out_dir": str(tmp_path / "runs")}
    for crop, scale, noted in ((f"{H}x{W}", [0.75, 1.5], False), (f"{2 * H}x{W}", [0.75, 2.0], False),
                               (f"{2 * H}x{W}", [0.5, 1.25], True)):
        said: list[str] = []
        api.train({**settings, "data.crop_size": crop, "data.scale": scale}, echo=said.append)
        assert any("training crop (data.crop_size) is larger than every train image" in line for line in said) == noted
    from segnas.data.validate import DataReport, SplitReport

    # a portrait 1000x500 (the largest area) and a landscape 600x800: a 512x768 crop fits the second
    mixed = DataReport({"train": SplitReport("train", "folder", 2, (1000, 500), other_size=(600, 800),
                                             tallest_widest=(1000, 800))})
    said = []
    mixed.note_padded_crops(DataConfig(name="folder", root=".", crop_size=(512, 768), scale=(1.0, 1.0)), said.append)
    assert said == []
    mixed.note_padded_crops(DataConfig(name="folder", root=".", crop_size=(512, 900), scale=(1.0, 1.0)), said.append)
    assert len(said) == 1 and "(at most 1000 high, 800 wide)" in said[0]


class _Halves(nn.Module):
    """Class 1 on the left half of the input, class 0 on the right (a fixed network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        left = (torch.arange(w, dtype=torch.float32) < w / 2).float().expand(x.shape[0], x.shape[2], w)
        return torch.stack([1 - left, left], 1)


def test_label_size_scores_the_upsampled_output_against_the_labels_at_their_own_size(tmp_path):
    root = tmp_path / "d"
    make_folder(root, n=2)
    size = (H // 2, W // 2)
    at_label = build_dataset("folder", str(root), "val", eval_transforms(size, label_size=True), classes=CLASSES)
    image, mask = at_label[0]
    assert tuple(image.shape[-2:]) == size and tuple(mask.shape) == (H, W)
    metrics = evaluate(_Halves(), at_label, 3, batch_size=2)
    expected = ConfusionMatrix(3)  # written out: the output at the label size is the left-half rule there
    for k in range(2):
        label = torch.from_numpy(np.asarray(Image.open(root / "masks" / "val" / f"img{k}.png")).astype(np.int64))
        expected.update((torch.arange(W) < W / 2).long().expand(H, W)[None], label[None])
    assert np.allclose(np.nan_to_num(metrics.iou), np.nan_to_num(expected.compute().iou))


def test_a_split_reads_its_linked_subfolders_and_matches_names_in_one_unicode_form(tmp_path):
    """A sequence linked into a split (kept elsewhere) was left out without a word (6 pairs of 9);
    a mask named ``città`` in another unicode form (as macOS archives write it) was "no mask"."""
    import unicodedata

    from segnas.data.folder import FolderDataset

    root = tmp_path / "data"
    (root / "dataset.yaml").parent.mkdir(parents=True)
    (root / "dataset.yaml").write_text("classes: [a, b]\n")
    elsewhere = tmp_path / "kept"
    for kind, ext in (("images", ".png"), ("masks", ".png")):
        (root / kind / "train").mkdir(parents=True)
        (elsewhere / kind).mkdir(parents=True)
        for name, folder in (("0001", root / kind / "train"), ("0002", elsewhere / kind)):
            array = np.zeros((4, 6, 3) if kind == "images" else (4, 6), np.uint8)
            Image.fromarray(array).save(folder / f"{name}{ext}")
        (root / kind / "train" / "seqA").symlink_to(elsewhere / kind, target_is_directory=True)
        (elsewhere / kind / "loop").symlink_to(elsewhere / kind, target_is_directory=True)  # a loop ends
        form = "NFD" if kind == "images" else "NFC"
        name = unicodedata.normalize(form, "città")
        Image.fromarray(np.zeros((4, 6, 3) if kind == "images" else (4, 6), np.uint8)).save(
            root / kind / "train" / f"{name}{ext}")
    dataset = FolderDataset(root, "train")
    stems = sorted(unicodedata.normalize("NFC", p.relative_to(root / "images" / "train").with_suffix("").as_posix())
                   for p, _ in dataset.pairs)
    assert stems == ["0001", "città", "seqA/0002"]


def test_a_missing_validation_split_says_how_to_train_without_one(tmp_path):
    from segnas.data.folder import folder_pairs
    from segnas.errors import SegnasError

    (tmp_path / "images" / "train").mkdir(parents=True)
    with pytest.raises(SegnasError, match="images/val: image folder not found .*; to train without a validation "
                                          "split: data.val_split null"):
        folder_pairs(tmp_path, "val")
