"""Any user data set: image and mask folders, or list files.

Layouts (a list file wins when both exist):

    root/images/{split}/<stem>.<ext>   with   root/masks/{split}/<stem>.<ext>   (matched by stem,
                                               subfolders included: images/train/seqA/0001.jpg with
                                               masks/train/seqA/0001.png; masks may use another
                                               extension; hidden files are left out)
    root/{split}.txt                   lines ``image_path mask_path`` relative to root

Options (each may also come from ``root/dataset.yaml``, ``dataset.yml`` or ``dataset.json``;
options given explicitly override the file):

    classes              list of class names, in index order (required)
    palette              list of [r, g, b], one per class: masks are colour images mapped with it
    ignore_colors        list of [r, g, b] that mean ignore (only with ``palette``)
    ignore_index_values  raw mask values that mean ignore (index masks; default [255])

Without a palette, masks are single-channel class indices 0..C-1; any other value that is not an
ignore value is an error naming the file and the values.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from segnas.data.base import (IGNORE_INDEX, ClassInfo, ColorMapper, LabelMapper, PairDataset,
                              list_images, read_pair_list, root_folder)
from segnas.data.transforms import Compose
from segnas.config.io import parse_yaml
from segnas.errors import SegnasError
from segnas.utils import read_text_file

DESCRIPTION_FILES = ("dataset.yaml", "dataset.yml", "dataset.json")
FIELDS = ("classes", "palette", "ignore_colors", "ignore_index_values")
DEFAULT_IGNORE_VALUES = (IGNORE_INDEX,)
#: The largest value an 8- or 16-bit mask holds.
MAX_MASK_VALUE = 65535


def read_description(root: Path) -> tuple[dict[str, Any], Path | None]:
    """The fields of ``root/dataset.{yaml,yml,json}`` (first one found), and which file it was."""
    for fname in DESCRIPTION_FILES:
        path = root / fname
        if path.is_file():
            break
    else:
        return {}, None
    text = read_text_file(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise SegnasError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    else:
        data = parse_yaml(text, path)
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise SegnasError(f"{path}: expected a mapping with fields {', '.join(FIELDS)}, "
                          f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise SegnasError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    return data, path


def _check_classes(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        raise SegnasError(f"{where}: 'classes' is required: the list of class names in index order "
                          f"(as an option or in dataset.yaml at the data root)")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SegnasError(f"{where}: 'classes' must be a list of class names, got {value!r}")
    if len(value) < 2:
        raise SegnasError(f"{where}: 'classes' lists {len(value)} class(es); segmentation needs at least two "
                          "(e.g. [background, object])")
    names = []
    for i, name in enumerate(value):
        if isinstance(name, (bool, int, float)) or name is None:  # (YAML reads yes/no/on/off as booleans)
            raise SegnasError(f"{where}: classes[{i}] must be a name, got the {type(name).__name__} {name!r}: "
                              "quote the name in the file (e.g. '1', 'yes', 'off': YAML reads them otherwise)")
        if not isinstance(name, str) or not name.strip():
            raise SegnasError(f"{where}: classes[{i}] must be a non-empty name, got {name!r}")
        names.append(name.strip())
    lower = [n.lower() for n in names]  # settings name classes case-insensitively (data.focus_classes)
    dup = sorted({n for n in names if lower.count(n.lower()) > 1})
    if dup:
        raise SegnasError(f"{where}: duplicate class name(s) {', '.join(dup)} (names are compared ignoring case)")
    if len(names) > IGNORE_INDEX:
        raise SegnasError(f"{where}: {len(names)} classes; at most {IGNORE_INDEX} are supported "
                          f"({IGNORE_INDEX} is the ignore index)")
    return tuple(names)


def _check_color(value: Any, field: str, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                pass
    elif (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        return (int(value[0]), int(value[1]), int(value[2]))
    unquoted = " (an unquoted #rrggbb is a YAML comment: quote it, '#804080')" if value is None else ""
    raise SegnasError(f"{where}: {field} must be [r, g, b] with values 0..255 (or '#rrggbb'), got {value!r}{unquoted}")


def _check_colors(value: Any, field: str, where: str) -> tuple[tuple[int, int, int], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SegnasError(f"{where}: '{field}' must be a list of [r, g, b] colours, got {value!r}")
    return tuple(_check_color(c, f"{field}[{i}]", where) for i, c in enumerate(value))


def _check_ignore_values(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SegnasError(f"{where}: 'ignore_index_values' must be a list of integers, got {value!r}")
    for i, v in enumerate(value):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_MASK_VALUE:
            raise SegnasError(f"{where}: ignore_index_values[{i}] must be a mask value 0..{MAX_MASK_VALUE} "
                              f"(masks are 8- or 16-bit), got {v!r}")
    return tuple(int(v) for v in value)


def folder_pairs(root: Path, split: str) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """A split's pairs from ``{split}.txt`` if present, else from ``images/{split}`` + ``masks/{split}``;
    and the masks left out (no image of their name)."""
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        return read_pair_list(list_file, root), []
    image_dir = root / "images" / split
    mask_dir = root / "masks" / split
    if not image_dir.is_dir():
        raise SegnasError(f"{image_dir}: image folder not found (expected images/{split}/ and "
                          f"masks/{split}/, or a list file {split}.txt)"
                          + ("; to train without a validation split: data.val_split null" if split == "val" else ""))
    if not mask_dir.is_dir():
        raise SegnasError(f"{mask_dir}: mask folder not found (expected masks/{split}/ next to images/{split}/)")
    masks = by_relative_stem(mask_dir, "masks")
    images = by_relative_stem(image_dir, "images")
    pairs = []
    for stem, img in images.items():
        mask = masks.get(stem)
        if mask is None:
            raise SegnasError(f"{img}: no mask named {stem}.* in {mask_dir}")
        pairs.append((img, mask))
    return pairs, [masks[stem] for stem in sorted(set(masks) - set(images))]


def by_relative_stem(folder: Path, kind: str) -> dict[str, Path]:
    """The image files under ``folder`` and its subfolders by their path inside it without the
    extension (``seqA/0001``), which pairs an image with its mask; two files of one stem are refused.
    Stems compare in one unicode form (NFC): an archive made on macOS names ``città`` in another."""
    found: dict[str, Path] = {}
    for path in list_images(folder, recursive=True):
        stem = unicodedata.normalize("NFC", path.relative_to(folder).with_suffix("").as_posix())
        if stem in found:
            raise SegnasError(f"{path}: two {kind} for stem {stem!r} ({found[stem].name} and {path.name})")
        found[stem] = path
    return found


class FolderDataset(PairDataset):
    """A user data set described by ``classes`` (and optionally a ``palette``); see the module doc."""

    @staticmethod
    def has_split(root: str | Path | None, split: str, **options: Any) -> bool:
        """Whether ``root`` holds ``split``: its list file or its ``images/{split}`` folder."""
        return root is not None and ((Path(root) / f"{split}.txt").is_file()
                                     or (Path(root) / "images" / split).is_dir())

    def __init__(self, root: str | Path | None, split: str = "train", transform: Compose | None = None,
                 cache: bool = False, classes: list[str] | None = None,
                 palette: list[list[int]] | None = None, ignore_colors: list[list[int]] | None = None,
                 ignore_index_values: list[int] | None = None, **options: Any) -> None:
        if options:
            raise SegnasError(f"folder: unknown option(s) {', '.join(sorted(options))}; "
                              f"known: {', '.join(FIELDS)}")
        if root is None:
            raise SegnasError("folder: a data root is required (data.root; --data-root)")
        root = root_folder(Path(root), "dataset", "dataset.yaml and images/")
        described, desc_path = read_description(root)
        given = {"classes": classes, "palette": palette, "ignore_colors": ignore_colors,
                 "ignore_index_values": ignore_index_values}
        fields = {k: (given[k] if given[k] is not None else described.get(k)) for k in FIELDS}

        def where(field: str) -> str:
            return str(desc_path) if given[field] is None and field in described else "folder"

        names = _check_classes(fields["classes"], where("classes"))
        colors: tuple[tuple[int, int, int], ...] = ()
        if fields["palette"] is not None:
            colors = _check_colors(fields["palette"], "palette", where("palette"))
            if len(colors) != len(names):
                raise SegnasError(f"{where('palette')}: palette has {len(colors)} colours for "
                                  f"{len(names)} classes; give one [r, g, b] per class")
            if len(set(colors)) != len(colors):
                dup = sorted({c for c in colors if colors.count(c) > 1})
                raise SegnasError(f"{where('palette')}: palette colour(s) {dup} used by more than one class")
        ignores: tuple[tuple[int, int, int], ...] = ()
        if fields["ignore_colors"] is not None:
            if not colors:
                raise SegnasError(f"{where('ignore_colors')}: 'ignore_colors' needs a 'palette' "
                                  f"(colour masks); for index masks use 'ignore_index_values'")
            ignores = _check_colors(fields["ignore_colors"], "ignore_colors", where("ignore_colors"))
            clash = sorted(set(ignores) & set(colors))
            if clash:
                raise SegnasError(f"{where('ignore_colors')}: ignore_colors {clash} are also palette colours")
        ignore_values = DEFAULT_IGNORE_VALUES
        if fields["ignore_index_values"] is not None:
            ignore_values = _check_ignore_values(fields["ignore_index_values"], where("ignore_index_values"))
            clash = sorted(v for v in ignore_values if v < len(names))
            if clash:
                raise SegnasError(f"{where('ignore_index_values')}: ignore_index_values {clash} are class "
                                  f"indices (0..{len(names) - 1})")

        if colors and fields["ignore_index_values"] is not None:
            raise SegnasError(f"{where('ignore_index_values')}: 'ignore_index_values' applies to index masks; "
                              "with a 'palette' (colour masks) give the colours that mean ignore as 'ignore_colors'")
        if colors:
            mapper = ColorMapper(colors, ignores)
            label_mode = "rgb"
        else:
            mapper = LabelMapper({**{i: i for i in range(len(names))},
                                  **{v: IGNORE_INDEX for v in ignore_values}})
            label_mode = "index"
        pairs, self.left_out = folder_pairs(root, split)
        super().__init__(pairs, ClassInfo(names, colors), mapper, transform=transform, label_mode=label_mode,
                         cache=cache, name=f"folder[{split}] at {root}")
        self.root = root
        self.split = split
