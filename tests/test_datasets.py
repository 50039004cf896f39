"""Datasets on tiny fixtures written in tmp_path: Cityscapes, folder, CamVid, and every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnas.data import build_dataset
from segnas.data.base import IGNORE_INDEX, PairDataset
from segnas.data.camvid import CamVid
from segnas.data.cityscapes import Cityscapes
from segnas.data.folder import FolderDataset
from segnas.errors import SegnasError

H, W = 24, 32
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- helpers

def save_rgb(path: Path, h: int = H, w: int = W, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path)
    return path


def save_index(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), "L").save(path)
    return path


def save_colors(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), "RGB").save(path)
    return path


def index_mask(values, h: int = H, w: int = W) -> np.ndarray:
    """Vertical stripes cycling through ``values``."""
    values = np.asarray(values)
    return values[np.arange(w) % len(values)][None, :].repeat(h, axis=0)


def check_sample(ds: PairDataset, index: int = 0, shape=(H, W)) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = ds[index]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, *shape)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == shape
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    return image, mask


def raises(match_all: list[str], fn, *args, **kwargs) -> str:
    """Call ``fn`` expecting a SegnasError whose one-line message contains every string given."""
    with pytest.raises(SegnasError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    for part in match_all:
        assert str(part) in msg, f"{part!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------------------- Cityscapes

CS_LABEL_IDS = [7, 26, 0, 1, 8, 11, 33, 9, 23, 24]  # road car unlabeled ego sidewalk building bicycle parking sky person


def official_train_ids() -> dict[int, int]:
    from cityscapesscripts.helpers.labels import labels

    return {l.id: (255 if (l.ignoreInEval or l.trainId in (255, -1)) else l.trainId)
            for l in labels if l.id >= 0}


def make_cityscapes(root: Path, split: str = "train") -> list[str]:
    """Official layout, two cities, plus the other gtFine files that must not be picked up."""
    names = []
    for city, frames in (("aachen", ("000000_000019", "000001_000019")), ("bochum", ("000000_000313",))):
        for k, frame in enumerate(frames):
            name = f"{city}_{frame}"
            names.append(name)
            save_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", seed=k)
            gt = root / "gtFine" / split / city
            save_index(gt / f"{name}_gtFine_labelIds.png", index_mask(np.roll(CS_LABEL_IDS, k)))
            save_index(gt / f"{name}_gtFine_instanceIds.png", np.full((H, W), 26))
            save_colors(gt / f"{name}_gtFine_color.png", np.zeros((H, W, 3)))
            (gt / f"{name}_gtFine_polygons.json").write_text("{}")
    return names


def test_cityscapes_official_layout_and_train_ids(tmp_path):
    make_cityscapes(tmp_path, "train")
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 3
    assert ds.num_classes == 19
    assert ds.classes.names[0] == "road" and ds.classes.names[13] == "car" and ds.classes.names[18] == "bicycle"
    assert ds.classes.colors[0] == (128, 64, 128) and ds.classes.colors[13] == (0, 0, 142)
    assert [p[0].parent.name for p in ds.pairs] == ["aachen", "aachen", "bochum"]
    assert all(p[1].name.endswith("_gtFine_labelIds.png") for p in ds.pairs)

    ids = official_train_ids()
    assert (ids[7], ids[26], ids[0], ids[1], ids[9]) == (0, 13, 255, 255, 255)
    for i in range(len(ds)):
        _, mask = check_sample(ds, i)
        raw = np.asarray(Image.open(ds.pairs[i][1])).astype(np.int64)
        expected = np.vectorize(ids.get)(raw)
        assert np.array_equal(mask.numpy(), expected)
    _, mask = ds[0]
    row = mask[0].tolist()
    assert row[:4] == [0, 13, 255, 255]  # road, car, unlabeled, ego vehicle
    assert set(torch.unique(mask).tolist()) <= set(range(19)) | {IGNORE_INDEX}


def test_cityscapes_every_table_id_is_declared(tmp_path):
    from cityscapesscripts.helpers.labels import labels

    all_ids = [l.id for l in labels if l.id >= 0]
    make_cityscapes(tmp_path, "val")
    lab = next((tmp_path / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    save_index(lab, index_mask(all_ids))
    ds = build_dataset("cityscapes", tmp_path, "val", mode="fine")
    assert isinstance(ds, Cityscapes) and ds.validate() == 3


def test_cityscapes_errors(tmp_path):
    raises(["cityscapes", "root"], Cityscapes, None, "train")
    raises([tmp_path / "nope"], Cityscapes, tmp_path / "nope", "train")
    make_cityscapes(tmp_path, "train")
    raises([tmp_path / "leftImg8bit" / "val"], Cityscapes, tmp_path, "val")
    raises(["coarse"], Cityscapes, tmp_path, "train", mode="coarse")
    raises(["colour"], Cityscapes, tmp_path, "train", colour=True)

    # gtFine/{split} missing
    other = tmp_path / "other"
    save_rgb(other / "leftImg8bit" / "train" / "aachen" / "aachen_0_0_leftImg8bit.png")
    raises([other / "gtFine" / "train"], Cityscapes, other, "train")

    # an image without its label file: names the label path it expected
    (other / "gtFine" / "train" / "aachen").mkdir(parents=True)
    raises([other / "gtFine" / "train" / "aachen" / "aachen_0_0_gtFine_labelIds.png"], Cityscapes, other, "train")

    # a label value outside the table: names the file and the value, on read
    lab = tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png"
    save_index(lab, index_mask([7, 200, 26]))
    ds = Cityscapes(tmp_path, "train")
    ds[0]
    raises([lab, "200"], ds.validate)

    # empty split
    (tmp_path / "leftImg8bit" / "extra").mkdir()
    (tmp_path / "gtFine" / "extra").mkdir()
    raises(["empty", "cityscapes[extra]"], Cityscapes, tmp_path, "extra")

    # the public test split's labels are blank: refused, not scored as NaN
    make_cityscapes(tmp_path, "test")
    raises(["cityscapes: the test split's public labels are blank"], Cityscapes, tmp_path, "test")
    # macOS's ._ files are not images; a train-ids map where the label-ids one belongs is named as such
    save_rgb(tmp_path / "leftImg8bit" / "val" / "aachen" / "._aachen_000000_000019_leftImg8bit.png")
    make_cityscapes(tmp_path, "val")
    assert len(Cityscapes(tmp_path, "val")) == 3
    label = tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    label.rename(label.with_name("aachen_000000_000019_gtFine_labelTrainIds.png"))
    raises(["label file not found", "(segnas reads the labelIds maps, not labelTrainIds)"], Cityscapes, tmp_path, "val")


# --------------------------------------------------------------------------------- folder

CLASSES = ["background", "road", "car"]
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]


def make_index_folder(root: Path, split: str = "train", n: int = 2, values=(0, 1, 2, 255)) -> None:
    for k in range(n):
        save_rgb(root / "images" / split / f"img{k}.jpg", seed=k)
        save_index(root / "masks" / split / f"img{k}.png", index_mask(values))


def make_color_folder(root: Path, split: str = "train", n: int = 2, extra=()) -> None:
    colors = np.array(PALETTE + list(extra), dtype=np.uint8)
    for k in range(n):
        save_rgb(root / "images" / split / f"c{k}.png", seed=k)
        save_colors(root / "masks" / split / f"c{k}.png", colors[index_mask(range(len(colors)))])


def test_folder_index_masks(tmp_path):
    make_index_folder(tmp_path)
    (tmp_path / "masks" / "train" / "unused.png").write_bytes(b"")  # masks without images are ignored
    ds = FolderDataset(tmp_path, "train", classes=CLASSES)
    assert len(ds) == 2 and ds.num_classes == 3
    assert ds.classes.names == tuple(CLASSES)
    _, mask = check_sample(ds)
    assert mask[0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]

    # other raw ignore values replace the default 255
    make_index_folder(tmp_path / "b", values=(0, 1, 2, 9))
    ds = build_dataset("folder", tmp_path / "b", "train", classes=CLASSES, ignore_index_values=[9])
    assert ds[0][1][0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]
    raises(["ignore_index_values", "1"], FolderDataset, tmp_path, "train", classes=CLASSES,
           ignore_index_values=[1])
    raises(["ignore_index_values[0]"], FolderDataset, tmp_path, "train", classes=CLASSES,
           ignore_index_values=[-1])
    # no lookup table sized by a value no 8- or 16-bit mask holds
    raises(["ignore_index_values[1]", "0..65535", "10000000000000"], FolderDataset, tmp_path, "train",
           classes=CLASSES, ignore_index_values=[255, 10**13])


def test_folder_color_masks_with_palette(tmp_path):
    make_color_folder(tmp_path, extra=[[255, 255, 255]])
    ds = FolderDataset(tmp_path, "train", classes=CLASSES, palette=PALETTE, ignore_colors=[[255, 255, 255]])
    assert ds.classes.colors == tuple(tuple(c) for c in PALETTE)
    _, mask = check_sample(ds)
    assert mask[0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]
    # hex colours are accepted too
    ds = FolderDataset(tmp_path, "train", classes=CLASSES, palette=["#000000", "#804080", "#00008e"],
                       ignore_colors=["#ffffff"])
    assert ds[1][1][0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]


def test_folder_dataset_yaml_and_json(tmp_path):
    make_color_folder(tmp_path, extra=[[255, 255, 255]])
    (tmp_path / "dataset.yaml").write_text(
        "classes: [background, road, car]\n"
        "palette:\n  - [0, 0, 0]\n  - [128, 64, 128]\n  - [0, 0, 142]\n"
        "ignore_colors: [[255, 255, 255]]\n"
    )
    ds = build_dataset("folder", tmp_path, "train")
    assert ds.classes.names == tuple(CLASSES)
    assert ds[0][1][0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]
    # explicit options override the file
    ds = FolderDataset(tmp_path, "train", classes=["bg", "street", "vehicle"])
    assert ds.classes.names == ("bg", "street", "vehicle")
    assert ds[0][1][0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]

    js = tmp_path / "j"
    make_index_folder(js)
    (js / "dataset.json").write_text(json.dumps({"classes": CLASSES}))
    ds = FolderDataset(js, "train")
    assert ds.num_classes == 3 and ds[0][1][0, :4].tolist() == [0, 1, 2, IGNORE_INDEX]


def test_folder_list_files(tmp_path):
    save_rgb(tmp_path / "pics" / "a.jpg", seed=1)
    save_rgb(tmp_path / "pics" / "b.jpg", seed=2)
    save_index(tmp_path / "labels" / "a_label.png", index_mask([2, 1, 0]))
    save_index(tmp_path / "labels" / "b_label.png", index_mask([1]))
    # with a byte-order mark and Windows line ends, as Notepad saves it
    (tmp_path / "val.txt").write_bytes("\ufeff# image mask\r\npics/a.jpg labels/a_label.png\r\n\r\n"
                                       "pics/b.jpg labels/b_label.png\r\n".encode())
    ds = FolderDataset(tmp_path, "val", classes=CLASSES)
    assert len(ds) == 2
    _, mask = check_sample(ds)
    assert mask[0, :3].tolist() == [2, 1, 0]
    assert ds.validate() == 2


def test_folder_option_errors(tmp_path):
    make_index_folder(tmp_path)
    raises(["folder", "root"], FolderDataset, None, "train", classes=CLASSES)
    raises(["'classes' is required"], FolderDataset, tmp_path, "train")
    raises(["'classes' must be a list"], FolderDataset, tmp_path, "train", classes="road")
    raises(["duplicate", "road"], FolderDataset, tmp_path, "train", classes=["road", "road"])
    raises(["duplicate", "Road", "ignoring case"], FolderDataset, tmp_path, "train", classes=["Road", "road"])
    raises(["'classes' lists 1 class", "at least two"], FolderDataset, tmp_path, "train", classes=["road"])
    raises(["palette has 2 colours for 3 classes"], FolderDataset, tmp_path, "train",
           classes=CLASSES, palette=PALETTE[:2])
    raises(["palette[1]", "300"], FolderDataset, tmp_path, "train", classes=CLASSES,
           palette=[[0, 0, 0], [300, 0, 0], [1, 2, 3]])
    raises(["ignore_colors", "needs a 'palette'"], FolderDataset, tmp_path, "train", classes=CLASSES,
           ignore_colors=[[1, 1, 1]])
    raises(["unknown option", "pallete"], FolderDataset, tmp_path, "train", classes=CLASSES, pallete=PALETTE)
    raises(["palette colour", "(0, 0, 0)", "more than one class"], FolderDataset, tmp_path, "train",
           classes=CLASSES, palette=[[0, 0, 0], [0, 0, 0], [1, 2, 3]])
    raises(["ignore_colors", "(0, 0, 0)"], FolderDataset, tmp_path, "train", classes=CLASSES,
           palette=PALETTE, ignore_colors=[[0, 0, 0]])


def test_label_mapper_rejects_negative_raw_values():
    from segnas.data.base import LabelMapper

    # a negative key used to alias the last LUT entry (raw 255) silently
    raises(["label mapping", "-1"], LabelMapper, {0: 0, -1: IGNORE_INDEX})


def test_folder_description_file_errors(tmp_path):
    make_index_folder(tmp_path)
    desc = tmp_path / "dataset.yaml"
    desc.write_text("classes: [road, car\npalette: [[0, 0, 0]]\n")
    raises([desc, "invalid YAML"], FolderDataset, tmp_path, "train")
    desc.write_text("- road\n- car\n")
    raises([desc, "mapping"], FolderDataset, tmp_path, "train")
    desc.write_text("classes: [a, b, c]\ncolours: [[0, 0, 0]]\n")
    raises([desc, "colours"], FolderDataset, tmp_path, "train")
    desc.write_text("classes: [a, b, c]\npalette: [[0, 0, 0]]\n")
    raises([desc, "palette has 1 colours for 3 classes"], FolderDataset, tmp_path, "train")
    desc.write_text("palette: [[0, 0, 0]]\n")
    raises(["'classes' is required"], FolderDataset, tmp_path, "train")
    desc.unlink()
    bad_json = tmp_path / "dataset.json"
    bad_json.write_text('{"classes": [a]}')
    raises([bad_json, "malformed JSON"], FolderDataset, tmp_path, "train")
    # a byte-order mark, as Windows editors save UTF-8, is not part of the text
    bad_json.write_text('\ufeff{"classes": ["background", "road", "car"]}', encoding="utf-8")
    assert FolderDataset(tmp_path, "train").classes.names == tuple(CLASSES)


# ----------------------------------------------------------------------------------- CamVid

def make_camvid(root: Path, split: str, n: int = 2, values=tuple(range(12))) -> list[str]:
    names = [f"0001TP_{6690 + 30 * k:06d}.png" for k in range(n)]
    for k, name in enumerate(names):
        save_rgb(root / split / name, seed=k)
        save_index(root / f"{split}annot" / name, index_mask(values))
    return names


def test_camvid_folder_form(tmp_path):
    make_camvid(tmp_path, "train")
    ds = CamVid(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 11
    _, mask = check_sample(ds)
    assert mask[0, :12].tolist() == list(range(11)) + [IGNORE_INDEX]


def test_camvid_list_form_segnet_paths(tmp_path):
    names = make_camvid(tmp_path, "val")
    # SegNet's own lists use absolute '/SegNet/CamVid/...' paths; relative lines work too
    (tmp_path / "val.txt").write_text(
        f"/SegNet/CamVid/val/{names[0]} /SegNet/CamVid/valannot/{names[0]}\n"
        f"val/{names[1]} valannot/{names[1]}\n"
    )
    (tmp_path / "val" / "extra.png").write_bytes(b"")  # not listed: the list file wins
    ds = build_dataset("camvid", tmp_path, "val")
    assert len(ds) == 2
    assert ds.pairs[0] == (tmp_path / "val" / names[0], tmp_path / "valannot" / names[0])
    _, mask = check_sample(ds, 1)
    assert int(mask[0, 11]) == IGNORE_INDEX
    raises(["camvid", "classes"], build_dataset, "camvid", tmp_path, "val", classes=CLASSES)
    # a misspelt split names the splits there are
    raises(["camvid: no split 'vall' at", "(no vall.txt, no vall/ folder); its splits: val"],
           build_dataset, "camvid", tmp_path, "vall")


def test_camvid_holdout_sequence_is_a_second_validation_set(tmp_path):
    make_camvid(tmp_path, "train", n=3)
    for k in range(2):  # two frames of another street
        name = f"0006R0_{7740 + 30 * k:06d}.png"
        save_rgb(tmp_path / "train" / name, seed=10 + k)
        save_index(tmp_path / "trainannot" / name, index_mask(tuple(range(12))))
    plain, rest = CamVid(tmp_path, "train"), build_dataset("camvid", tmp_path, "train", holdout="0006R0")
    held = build_dataset("camvid", tmp_path, "holdout", holdout="0006R0")
    assert len(plain) == 5 and len(rest) == 3 and len(held) == 2
    assert {p.name[:6] for p, _ in rest.pairs} == {"0001TP"} and {p.name[:6] for p, _ in held.pairs} == {"0006R0"}
    assert sorted(rest.pairs + held.pairs) == sorted(plain.pairs)  # a partition of the training split
    assert CamVid.has_split(tmp_path, "holdout", holdout="0006R0") and not CamVid.has_split(tmp_path, "holdout")
    raises(["holdout 'Seq05VD'", "0001TP, 0006R0"], build_dataset, "camvid", tmp_path, "train", holdout="Seq05VD")
    raises(["split 'holdout' needs the option holdout"], CamVid, tmp_path, "holdout")


# ------------------------------------------------------------------------------ bad inputs

def test_error_missing_root_and_split(tmp_path):
    raises([tmp_path / "missing"], CamVid, tmp_path / "missing", "train")
    raises([tmp_path / "missing"], FolderDataset, tmp_path / "missing", "train", classes=CLASSES)
    make_index_folder(tmp_path, "train")
    raises([tmp_path / "images" / "val"], FolderDataset, tmp_path, "val", classes=CLASSES)
    (tmp_path / "images" / "val").mkdir()
    raises([tmp_path / "masks" / "val"], FolderDataset, tmp_path, "val", classes=CLASSES)
    make_camvid(tmp_path / "cv", "train")
    raises([f"no split 'test' at {tmp_path / 'cv'}", "its splits: train"], CamVid, tmp_path / "cv", "test")


def test_error_missing_list_entry(tmp_path):
    names = make_camvid(tmp_path, "train", n=1)
    (tmp_path / "train.txt").write_text(f"train/{names[0]} trainannot/{names[0]}\ntrain/ghost.png trainannot/ghost.png\n")
    raises([tmp_path / "train" / "ghost.png", "not found"], CamVid, tmp_path, "train")
    (tmp_path / "train.txt").write_text(f"train/{names[0]}\n")
    raises([tmp_path / "train.txt", ":1", "expected"], CamVid, tmp_path, "train")


def test_error_image_without_mask(tmp_path):
    make_index_folder(tmp_path)
    save_rgb(tmp_path / "images" / "train" / "lonely.jpg")
    raises([tmp_path / "images" / "train" / "lonely.jpg", "no mask"], FolderDataset, tmp_path, "train",
           classes=CLASSES)


def test_error_unreadable_image_on_load(tmp_path):
    make_index_folder(tmp_path)
    bad = tmp_path / "images" / "train" / "img1.jpg"
    bad.write_bytes(b"\x00garbage, not a jpeg\xff" * 10)
    ds = FolderDataset(tmp_path, "train", classes=CLASSES)  # exists: fine until read
    ds[0]
    raises([bad, "cannot read image"], ds.__getitem__, 1)
    raises([bad], ds.validate)
    # a garbage label map too
    bad_mask = tmp_path / "masks" / "train" / "img0.png"
    bad_mask.write_bytes(b"nope")
    raises([bad_mask, "cannot read label"], ds.__getitem__, 0)


def test_error_size_mismatch(tmp_path):
    names = make_camvid(tmp_path, "train")
    save_index(tmp_path / "trainannot" / names[1], np.zeros((H, W + 8)))
    ds = CamVid(tmp_path, "train")
    ds[0]
    raises([tmp_path / "trainannot" / names[1], "40x24", "32x24", names[1]], ds.validate)


def test_error_label_values_outside_classes(tmp_path):
    make_index_folder(tmp_path, values=(0, 1, 2, 3, 7, 255))
    ds = FolderDataset(tmp_path, "train", classes=CLASSES)
    raises([tmp_path / "masks" / "train" / "img0.png", "[3, 7]"], ds.validate)
    make_camvid(tmp_path / "cv", "train", values=(0, 5, 12, 40))
    raises([tmp_path / "cv" / "trainannot", "[12, 40]"], CamVid(tmp_path / "cv", "train").validate)
    # colour masks: a colour that is not in the palette
    make_color_folder(tmp_path / "col", extra=[[9, 9, 9]])
    ds = FolderDataset(tmp_path / "col", "train", classes=CLASSES, palette=PALETTE)
    raises([tmp_path / "col" / "masks" / "train" / "c0.png", "(9, 9, 9)", "not in the palette"], ds.validate)
    # index masks that are really colour images
    raises(["give a palette"], FolderDataset(tmp_path / "col", "train", classes=CLASSES).validate)


def test_error_empty_dataset(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    raises(["empty", "folder[train]"], FolderDataset, tmp_path, "train", classes=CLASSES)
    (tmp_path / "val.txt").write_text("# nothing\n")
    raises(["empty"], FolderDataset, tmp_path, "val", classes=CLASSES)
    (tmp_path / "cv" / "train").mkdir(parents=True)
    (tmp_path / "cv" / "trainannot").mkdir()
    raises(["empty", "camvid[train]"], CamVid, tmp_path / "cv", "train")


def test_error_unknown_dataset_name(tmp_path):
    raises(["'kitti'", "camvid", "cityscapes", "folder"], build_dataset, "kitti", tmp_path, "train")


def test_cache_returns_same_sample(tmp_path):
    make_index_folder(tmp_path)
    ds = FolderDataset(tmp_path, "train", classes=CLASSES, cache=True)
    a = ds[0]
    (tmp_path / "images" / "train" / "img0.jpg").write_bytes(b"gone")  # cached: not re-read
    b = ds[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -------------------------------------------------------------------------------- real CamVid

def camvid_root() -> Path:
    return Path(os.environ.get("SEGNAS_CAMVID") or REPO.parent / "shared" / "data" / "camvid")


@pytest.mark.realdata
def test_real_camvid():
    root = camvid_root()
    if not root.is_dir():
        pytest.skip(f"real CamVid not found at {root} (set SEGNAS_CAMVID)")
    train, val = CamVid(root, "train"), CamVid(root, "val")
    assert (len(train), len(val)) == (367, 101)
    allowed = set(range(11)) | {IGNORE_INDEX}
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            _, mask = check_sample(ds, i, shape=(360, 480))
            assert set(torch.unique(mask).tolist()) <= allowed


def test_a_list_file_names_paths_with_spaces_quoted_or_tab_separated(tmp_path):
    from segnas.data.base import read_pair_list

    lines = ['"images/a b.jpg" "masks/a b.png"', "images/c d.jpg\tmasks/c d.png", "images/e.jpg masks/e.png",
             "images/bob's.jpg masks/bob's.png", '"images/f g.jpg"\t"masks/f g.png"']
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    pairs = read_pair_list(tmp_path / "train.txt", tmp_path)
    assert [(p.name, q.name) for p, q in pairs] == [("a b.jpg", "a b.png"), ("c d.jpg", "c d.png"), ("e.jpg", "e.png"),
                                                    ("bob's.jpg", "bob's.png"), ("f g.jpg", "f g.png")]
    for bad in ("images/a b.jpg masks/a b.png", "'x.png' it's.png", '"" b.png'):  # unquoted spaces, an unclosed
        (tmp_path / "bad.txt").write_text(bad + "\n")                            # quote, an empty path
        with pytest.raises(SegnasError, match=r"bad.txt:1: expected 'image_path label_path' \(a path with spaces: "):
            read_pair_list(tmp_path / "bad.txt", tmp_path)


def test_a_dataset_option_it_does_not_take_is_named_with_those_it_takes():
    with pytest.raises(SegnasError, match=r"^data.options: synthetic has no option 'sizes' \(its options: size, "
                                          r"length, seed\)$"):
        build_dataset("synthetic", None, "train", sizes=[48, 64])
