"""Common machinery of every dataset: class lists, image/mask reading, label mapping, validation.

A dataset yields ``(image, mask)``: image float32 CHW normalized, mask int64 HW with 255 = ignore.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from segnas.errors import SegnasError
from segnas.utils import read_text_file

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ClassInfo:
    """Names and display colours (RGB) of a dataset's classes, in train-id order."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.names:
            raise SegnasError("classes: the class list is empty")
        if not self.colors:
            object.__setattr__(self, "colors", default_palette(len(self.names)))
        if len(self.colors) != len(self.names):
            raise SegnasError(
                f"classes: {len(self.names)} names but {len(self.colors)} colours"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """(num_classes + 1, 3) uint8 lookup; the last row (black) is used for ignore."""
        return np.array(list(self.colors) + [(0, 0, 0)], dtype=np.uint8)


def check_same_classes(trained: Sequence[str], names: Sequence[str], what: str, dataset: str,
                       consequence: str) -> None:
    """SegnasError naming ``what`` (a trained network, a run) unless the classes it was trained on,
    ``trained``, are ``names`` of ``dataset``, in the same order; ``consequence`` says what using it
    anyway would do."""
    if len(trained) != len(names):
        raise SegnasError(f"{what} predicts {len(trained)} classes ({', '.join(trained)}), {dataset} has "
                          f"{len(names)} ({', '.join(names)}): {consequence}")
    if tuple(trained) != tuple(names):
        differ = next((a, b) for a, b in zip(trained, names) if a != b)
        raise SegnasError(f"{what} was trained on classes {', '.join(trained)}, {dataset} names them "
                          f"{', '.join(names)} (first difference: {differ[0]!r} vs {differ[1]!r}): {consequence}")


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """A deterministic, well-spread palette for datasets that bring no colours (PASCAL scheme)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i + 1
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


#: What Pillow raises on a file it cannot read: not an image, truncated or damaged, a broken header
#: (ValueError, SyntaxError), or one over Pillow's pixel limit (a decompression bomb).
IMAGE_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def root_folder(root: Path, what: str, holds: str) -> Path:
    """``root``, a dataset's folder; a SegnasError naming it when it is missing or a file (``holds``:
    what the folder holds, for the hint)."""
    if root.is_file():
        raise SegnasError(f"{root}: a file, not a folder: give the {what} root folder (the one that holds {holds})")
    if not root.is_dir():
        raise SegnasError(f"{root}: {what} root folder not found")
    return root


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB, turned as its EXIF orientation says (as viewers and
    annotation tools show it); 16-bit greyscale is scaled to 8 bits (the top byte, as OpenCV reads
    it). A clear SegnasError if it is missing or unreadable."""
    try:
        with Image.open(path) as im:
            return image_rgb(im, path)
    except FileNotFoundError:
        raise SegnasError(f"{path}: image file not found") from None
    except IMAGE_READ_ERRORS as exc:
        raise SegnasError(f"{path}: cannot read image ({read_problem(exc)})") from None


def image_rgb(im: Image.Image, where: Path | str) -> np.ndarray:
    """An open image's pixels as ``read_image`` reads a file (``where`` names it in errors)."""
    if exif_orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in WIDE_GREY_MODES:
        grey = np.asarray(im).astype(np.int64)
        if grey.min(initial=0) < 0 or grey.max(initial=0) > 65535:
            raise SegnasError(f"{where}: {im.mode} image values outside 0..65535; save it with 8 or 16 bits")
        return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
    refuse_float_image(im, where)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


#: Pillow's modes of one-channel images wider than 8 bits (16-bit PNG and TIFF, 32-bit integer).
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: EXIF orientations that turn the stored pixels by 90 degrees (width and height swap).
EXIF_ORIENTATION = 0x0112
EXIF_QUARTER_TURNS = (5, 6, 7, 8)


def refuse_float_image(im: Image.Image, path: Path | str) -> None:
    """A one-line SegnasError for a floating-point image (its scale is unknown: 0-1, 0-255, ...)."""
    if im.mode == "F":
        raise SegnasError(f"{path}: a floating-point image (mode F); save it with 8 or 16 bits per channel")


def exif_orientation(im: Image.Image) -> int:
    """An open image's EXIF orientation (1: as stored; 2-8: flipped and/or turned). A PNG's is read
    only from an eXIf chunk before its pixels (Pillow would decode the pixels to look further)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except IMAGE_READ_ERRORS:  # a damaged EXIF block: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def read_problem(exc: BaseException) -> str:
    """What went wrong reading a file, in a few words: the exception's first line, else its type
    (``OSError: image file is truncated (3 bytes not processed)``)."""
    if isinstance(exc, UnidentifiedImageError):  # its text repeats the path
        return "not an image format Pillow reads"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {first[:120]}" if first else exc.__class__.__name__


def check_image_file(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, checked without keeping its pixels: a PNG's chunks and checksums are
    verified (a truncated or damaged file fails) without decompressing them; other formats (JPEG,
    ...) are decoded. A one-line SegnasError naming the file otherwise."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            refuse_float_image(im, path)
            if im.format != "PNG":
                im.load()
            if exif_orientation(im) in EXIF_QUARTER_TURNS:
                w, h = h, w  # read_image turns it
        if im.format == "PNG":
            with Image.open(path) as png:  # verify() must come first after opening
                png.verify()
    except FileNotFoundError:
        raise SegnasError(f"{path}: image file not found") from None
    except IMAGE_READ_ERRORS as exc:
        raise SegnasError(f"{path}: cannot read image ({read_problem(exc)})") from None
    return h, w


def check_same_size(image_hw: tuple[int, ...], mask_hw: tuple[int, ...], img_path: Path, lab_path: Path) -> None:
    """A one-line SegnasError naming both files when a label map's size is not its image's."""
    if tuple(image_hw[:2]) != tuple(mask_hw[:2]):
        raise SegnasError(
            f"{lab_path}: label size {mask_hw[1]}x{mask_hw[0]} (WxH) does not match "
            f"image {img_path.name} size {image_hw[1]}x{image_hw[0]}"
            + (" (swapped: an image with an EXIF orientation is read turned as viewers show it, and its mask "
               "must be drawn on it so)" if tuple(image_hw[:2]) == tuple(mask_hw[1::-1][:2]) else "")
        )


def read_label(path: Path, mode: str = "index") -> np.ndarray:
    """Read a label map: ``index`` gives HxW integer values, ``rgb`` gives HxWx3 uint8 colours."""
    try:
        with Image.open(path) as im:
            if im.format in ("JPEG", "MPO"):  # (MPO: a camera's multi-picture JPEG)
                raise SegnasError(f"{path}: a JPEG mask: its lossy compression changes the class of pixels along "
                                  "every edge; save masks losslessly (PNG)")
            if mode == "rgb":
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im)[..., :3]
                grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
                raise SegnasError(
                    f"{path}: label map is a colour image; "
                    + ("its three channels are equal: save it with one channel (mode L or P)" if grey
                       else "give a palette to read colour masks")
                )
            arr = np.asarray(im)
    except FileNotFoundError:
        raise SegnasError(f"{path}: label file not found") from None
    except IMAGE_READ_ERRORS as exc:
        raise SegnasError(f"{path}: cannot read label map ({read_problem(exc)})") from None
    if arr.ndim != 2:
        raise SegnasError(f"{path}: label map must be single-channel, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.floor(arr)):
        bad = np.unique(arr[arr != np.floor(arr)])[:5].tolist()
        raise SegnasError(f"{path}: label values must be whole class indices, got {bad}")
    return arr.astype(np.int64)


class LabelMapper:
    """Maps raw label values to train ids (0..C-1) or ignore, rejecting undeclared values.

    ``mapping`` lists ``raw value -> train id`` (train id 255 = ignore). Any raw value not in the
    mapping is an error that names the file and the offending values.
    """

    def __init__(self, mapping: dict[int, int]) -> None:
        if any(raw < 0 for raw in mapping):
            raise SegnasError(f"label mapping: raw values must be >= 0, got {sorted(r for r in mapping if r < 0)}")
        top = max(mapping) if mapping else 0
        self.lut = np.full(max(top + 1, 256), -1, dtype=np.int64)
        for raw, train_id in mapping.items():
            self.lut[raw] = train_id

    def signature(self) -> str:
        """What this mapper accepts, as a short string (dataset checks are cached under it)."""
        return "index:" + hashlib.sha256(self.lut.tobytes()).hexdigest()[:16]

    def __call__(self, raw: np.ndarray, path: Path | str) -> np.ndarray:
        if raw.min(initial=0) < 0 or raw.max(initial=0) >= len(self.lut):
            bad = np.unique(raw[(raw < 0) | (raw >= len(self.lut))])
            raise SegnasError(f"{path}: label values {bad[:10].tolist()} are not declared classes")
        mapped = self.lut[raw]
        if (mapped < 0).any():
            bad = np.unique(raw[mapped < 0])
            raise SegnasError(f"{path}: label values {bad[:10].tolist()} are not declared classes")
        return mapped


class ColorMapper:
    """Maps an RGB label image to train ids with a palette; colours not in it are an error
    unless listed as ``ignore_colors``."""

    def __init__(self, colors: Sequence[Sequence[int]], ignore_colors: Sequence[Sequence[int]] = ()):
        self.codes = {self._code(c): i for i, c in enumerate(colors)}
        for c in ignore_colors:
            self.codes[self._code(c)] = IGNORE_INDEX

    def signature(self) -> str:
        """What this mapper accepts, as a short string (dataset checks are cached under it)."""
        return "rgb:" + hashlib.sha256(repr(sorted(self.codes.items())).encode()).hexdigest()[:16]

    @staticmethod
    def _code(c: Sequence[int]) -> int:
        return (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])

    def __call__(self, rgb: np.ndarray, path: Path | str) -> np.ndarray:
        codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        uniq, inverse = np.unique(codes, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int64)
        for k, code in enumerate(uniq):
            if int(code) not in self.codes:
                rgb_bad = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
                raise SegnasError(f"{path}: mask colour {tuple(int(v) for v in rgb_bad)} is not in the palette")
            ids[k] = self.codes[int(code)]
        return ids[inverse].reshape(codes.shape)


def meta_split(n: int, fraction: float, seed: int, cap: int | None = None,
               setting: str = "meta_val_fraction") -> tuple[list[int], list[int]]:
    """(meta-train, meta-validation) indices of a training split of ``n`` images, drawn with ``seed``:
    a search scores on the meta-validation part and never sees the validation split; ``cap``: at
    most that many meta-validation images; ``setting`` names the fraction in errors."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    held = max(1, int(round(fraction * n)))
    if held >= n:
        raise SegnasError(f"{setting}: {fraction} of {n} training images leaves none to train on")
    return order[held:], order[:held][:cap] if cap else order[:held]


@dataclass(frozen=True)
class PairCheck:
    """What checking one image/label pair found: the image's (H, W) and the train ids its mask holds
    (``IGNORE_INDEX`` among them when it has ignored pixels)."""

    size: tuple[int, int]
    classes: frozenset[int]


class SegmentationDataset(Protocol):
    """What every dataset of the registry (``segnas.data.DATASETS``) is to a job: its classes, its
    samples (``transform`` applied) and their decoded arrays (none applied). Its class is built as
    ``cls(root, split=..., transform=..., cache=..., **options)`` and answers the static
    ``has_split(root, split, **options)``."""

    classes: ClassInfo
    transform: Transform | None
    name: str

    @property
    def num_classes(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded uint8 HxWx3 image and its HxW mask of class ids (255: ignore)."""
        ...


class PairDataset(Dataset):
    """A dataset of (image file, label file) pairs with a label mapping and optional caching.

    Subclasses only find the pairs and describe the classes; reading, mapping, checking and
    transforming live here. ``cache=True`` keeps decoded arrays in memory (CamVid train is
    ~190 MB), which matters on a 2-core machine where decoding competes with training.
    ``left_out``: label files found that pair with no image (said before a job starts).
    """

    left_out: list[Path] = []

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        classes: ClassInfo,
        mapper: Callable[[np.ndarray, Path], np.ndarray],
        transform: Transform | None = None,
        label_mode: str = "index",
        cache: bool = False,
        name: str = "dataset",
    ) -> None:
        if not pairs:
            raise SegnasError(f"{name}: the dataset is empty (no image/label pairs found)")
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        for img, lab in self.pairs:
            if not img.is_file():
                raise SegnasError(f"{img}: image file not found")
            if not lab.is_file():
                raise SegnasError(f"{lab}: label file not found")
        self.classes = classes
        self.mapper = mapper
        self.transform = transform
        self.label_mode = label_mode
        self.name = name
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded uint8 HxWx3 image and int64 HxW train-id mask, checked for consistency."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        img_path, lab_path = self.pairs[index]
        image = read_image(img_path)
        mask = self.mapper(read_label(lab_path, self.label_mode), lab_path)
        check_same_size(image.shape, mask.shape, img_path, lab_path)
        mask = mask.astype(np.uint8)  # train ids and 255 fit a byte; halves cache memory
        if self._cache is not None:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_sample(*self.load_arrays(index), self.transform)

    def check_pair(self, index: int) -> PairCheck:
        """Check pair ``index`` as a job does before it starts (``segnas.data.validate``): the image
        file's header and integrity (``check_image_file``), every label value or colour, and that the
        sizes agree; returns the image's (H, W) and the classes its mask holds. Keeps nothing in memory."""
        img_path, lab_path = self.pairs[index]
        image_hw = check_image_file(img_path)
        mask = self.mapper(read_label(lab_path, self.label_mode), lab_path)
        check_same_size(image_hw, mask.shape, img_path, lab_path)
        ignored = mask == IGNORE_INDEX
        held = {int(c) for c in np.flatnonzero(np.bincount(mask[~ignored].ravel(), minlength=1))}
        return PairCheck(image_hw, frozenset(held | ({IGNORE_INDEX} if ignored.any() else set())))

    def validate(self) -> int:
        """Read every pair once (checking readability, sizes and labels); return the count."""
        for i in range(len(self)):
            self.load_arrays(i)
        return len(self)


def to_sample(image: np.ndarray, mask: np.ndarray, transform: Transform | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 H×W×3 image and H×W mask → (float CHW in [0, 1], int64 HW), then ``transform``."""
    img_t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    mask_t = torch.from_numpy(mask.astype(np.int64))
    if transform is not None:
        img_t, mask_t = transform(img_t, mask_t)
    return img_t, mask_t


def read_pair_list(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """Parse a list file of ``image label`` lines (paths relative to ``root``)."""
    if not list_file.is_file():
        raise SegnasError(f"{list_file}: list file not found")
    pairs = []
    for lineno, line in enumerate(read_text_file(list_file).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = pair_of_paths(line)
        if len(parts) != 2 or not all(parts):
            raise SegnasError(f"{list_file}:{lineno}: expected 'image_path label_path' (a path with spaces: quoted, "
                              f"or the two separated by a tab), got {line!r}")
        pairs.append((_resolve(root, parts[0]), _resolve(root, parts[1])))
    return pairs


def pair_of_paths(line: str) -> list[str]:
    """The paths of a list file's line: split at a tab when it has one, else at white space, where a
    path with spaces is quoted (shell-style); an apostrophe inside an unquoted name is a character."""
    if "\t" in line:
        return [_unquoted(part.strip()) for part in line.split("\t") if part.strip()]
    parts = line.split()
    if len(parts) == 2 and not any(part[0] in "\"'" for part in parts):
        return parts
    try:
        return shlex.split(line)
    except ValueError:  # an unclosed quote: said by the caller, with the line
        return [line]


def _unquoted(path: str) -> str:
    return path[1:-1] if len(path) > 1 and path[0] == path[-1] and path[0] in "\"'" else path


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    if not p.is_absolute():
        return root / p
    if p.exists():
        return p
    # SegNet-style lists start with '/SegNet/CamVid/...': an absolute path that does not exist is
    # looked up under root by its longest suffix that does (e.g. root/val/x.png); else kept as is.
    parts = p.parts[1:]
    for k in range(len(parts) - 1):
        candidate = root.joinpath(*parts[k:])
        if candidate.exists():
            return candidate
    return p


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files inside ``folder`` (and its subfolders if ``recursive``), leaving out hidden
    files and folders (``.name``, such as macOS's ``._x.jpg``); a SegnasError if the folder is missing."""
    if not folder.is_dir():
        raise SegnasError(f"{folder}: folder not found")
    found = _files_below(folder) if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _files_below(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, through linked subfolders too (a split gathered from sequences
    kept elsewhere; ``Path.rglob`` leaves them out), each real folder once (a link loop ends)."""
    seen: set[tuple[int, int]] = set()
    for here, subfolders, files in os.walk(folder, followlinks=True):
        info = os.stat(here)
        if (info.st_dev, info.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        yield from (Path(here) / name for name in files)
