"""Evaluation and prediction jobs on a trained checkpoint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segnas.config.train import options_data
from segnas.data import build_dataset, dataset_options, eval_transforms, validate_split
from segnas.cost.memory import check_inference_size
from segnas.data.base import (IGNORE_INDEX, IMAGE_EXTENSIONS, check_image_file, check_same_classes, image_rgb,
                               list_images, read_image)
from segnas.data.transforms import Normalize
from segnas.engine.device import exact_fp32, module_device, resolve_device
from segnas.engine.evaluate import evaluate, predict_logits, usable_bf16
from segnas.engine.rundir import RunDir
from segnas.errors import SegnasError
from segnas.training.models import load_trained, trained_checkpoint
from segnas.metrics import SegMetrics
from segnas.progress import Echo, task_progress
from segnas.report.draw import colorize, overlay, save_png
from segnas.utils import parse_size_or_native


#: ``eval_job``'s ``base_size`` default: the size the checkpoint's own settings evaluate at.
CHECKPOINT = "checkpoint"


def checkpoint_base_size(state: dict[str, Any], base_size: Any = CHECKPOINT) -> tuple[tuple[int, int] | None, str]:
    """The evaluation size: ``base_size`` when given ((H, W) or "HxW"; None or "native": each image's
    own), else the checkpoint's ``data.base_size``; with a phrase saying where it came from."""
    if base_size != CHECKPOINT:
        return parse_size_or_native(base_size, "base_size"), "as given"
    saved = ((state.get("config") or {}).get("data") or {}).get("base_size")
    if saved:
        return ((int(saved[0]), int(saved[1])),
                "the checkpoint's data.base_size; --base-size native, or base_size='native', keeps each image's own "
                "size")
    return None, "native size: the checkpoint has no data.base_size"


class TickingDataset:
    """A dataset that advances a progress ticker as its samples are read."""

    def __init__(self, dataset: Any, ticker: Any) -> None:
        self.dataset, self.ticker = dataset, ticker

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        self.ticker.advance()
        return item


def eval_job(checkpoint: str | Path, data: str, root: str | None, split: str = "val",
             base_size: tuple[int, int] | None | str = CHECKPOINT, batch_size: int = 4, bf16: bool = False,
             options: dict[str, Any] | None = None, raw: bool = False, echo: Echo | None = None,
             progress: bool = True, label_size: bool = False) -> tuple[SegMetrics, list[str]]:
    """Score a checkpoint on a dataset split; returns metrics and the class names. Scores the
    weights training reported (EMA when the checkpoint has them; ``raw`` for the raw ones) at the
    checkpoint's ``data.base_size`` unless ``base_size`` is given (None: native size); says which
    through ``echo``. The labels are resized to that size too (nearest), as training's validation
    scores, unless ``label_size``: then the logits are resized to each label's own size. ``bf16`` is
    ignored (fp32) on CPUs without native bf16."""
    model, classes, state, weights = load_trained(checkpoint, raw)
    size, where = checkpoint_base_size(state, base_size)
    options = with_training_options(data, options, state, echo)
    dataset, report = checked_split(data, root, split, options, eval_transforms(size, label_size), classes.names,
                                    f"{checkpoint}:", "scores would be of other classes", progress, echo)
    check_inference_size(size or report.max_size, classes.num_classes,
                         ("base_size (--base-size)" if base_size != CHECKPOINT else "the checkpoint's data.base_size")
                         if size else f"the largest {split} image", batch_size)
    if echo:
        report.note_unscored_classes(echo)
        at = f"{size[0]}x{size[1]}" if size else "native size"
        against = ", against the labels at their own size" if label_size and size else ""
        echo(f"scoring the {weights} weights at {at} ({where}){against}")
    with task_progress(f"eval {data}/{split}", len(dataset), progress) as ticker:
        metrics = evaluate(model, TickingDataset(dataset, ticker), classes.num_classes, batch_size, usable_bf16(bf16))
    return metrics, list(classes.names)


def checked_split(data: str, root: str | None, split: str, options: dict[str, Any], transform: Any,
                  trained: Sequence[str], what: str, consequence: str, progress: bool = True,
                  echo: Echo | None = None) -> tuple[Any, Any]:
    """Split ``split`` of dataset ``data`` with ``transform``, checked before a network trained on
    classes ``trained`` (``what``: the network, in errors) is scored on it: every file read (a bad one
    named now, not part-way), its classes those of the network; with the split's report."""
    options_data(data, root)  # (a folder given with the synthetic scenes refused)
    report = validate_split(data, root, split, options, progress, echo)
    dataset = build_dataset(data, root, split, transform, **options)
    check_same_classes(trained, dataset.classes.names, what, f"dataset {data!r}", consequence)
    return dataset, report


def with_training_options(data: str, options: dict[str, Any] | None, state: dict[str, Any],
                          echo: Echo | None = None) -> dict[str, Any]:
    """The dataset options a checkpoint is scored with: those of its training (``data.options``)
    when it trained on dataset ``data``, under the ones given. A given value other than its
    training's is said: a split the option defines (CamVid's holdout street) may then hold images
    the network trained on."""
    trained = (state.get("config") or {}).get("data") or {}
    same = trained.get("name") == data
    own = dict(trained.get("options") or {}) if same else {}
    given = dict(options or {})
    if same and echo is not None:
        defaults = dataset_options(data)[0]
        if own:
            echo(f"data.options of its training: {', '.join(f'{k}={v!r}' for k, v in own.items())}")
        for key, value in given.items():
            if (key in own or key in defaults) and own.get(key, defaults.get(key)) != value:
                echo(f"note: data.options {key}={value!r}, its training's {own.get(key, defaults.get(key))!r}: a "
                     "split this option defines (e.g. CamVid's holdout street) may hold images the network trained on")
    return {**own, **given}


def collect_inputs(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """One image, or every image in a folder and its subfolders (e.g. extracted video frames),
    sorted by path; leaving out what lies in ``out_dir`` (where predictions go), which must not be
    the folder itself."""
    path = Path(path)
    if path.is_dir():
        out = Path(out_dir).resolve() if out_dir is not None else None
        if out is not None and out == path.resolve():
            raise SegnasError(f"--out {out_dir}: is the input folder: the predictions would mix with the images "
                              "(and could replace one of the same name); choose another folder")
        inside = out is not None and out.is_relative_to(path.resolve())  # frames/pred: not read as input
        files = [f for f in list_images(path, recursive=True) if not (inside and f.resolve().is_relative_to(out))]
        if not files:
            video = next((f for f in sorted(path.rglob("*")) if f.suffix.lower() in VIDEO_EXTENSIONS), None)
            raise SegnasError(f"{path}: no images in folder or its subfolders (looked for "
                              f"{', '.join(IMAGE_EXTENSIONS)})" + (f"; {video.name} is a video: " + frames_hint(video)
                                                                   if video is not None else ""))
        return files
    if not path.is_file():
        raise SegnasError(f"{path}: input image or folder not found")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        raise SegnasError(f"{path}: a video; {frames_hint(path)}")
    return [path]


#: Files predict reads as videos, not images (an animated GIF is an image of several frames).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def frames_hint(video: Path) -> str:
    """How to predict a video's (or an animation's) frames."""
    return (f"predict reads still images: extract its frames (e.g. ffmpeg -i {video} frames/%05d.png) and give "
            "the folder")


#: Formats whose images of several frames are animations (a JPEG's second image, MPO, is a
#: phone's gain map or depth map: a still photo).
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")


def check_still_image(path: Path) -> None:
    """A SegnasError for an animation (a GIF, PNG or WebP of several frames), of which predict
    would read only the first frame."""
    with Image.open(path) as im:
        frames = getattr(im, "n_frames", 1) if im.format in ANIMATED_FORMATS else 1
    if frames > 1:
        raise SegnasError(f"{path}: an image of {frames} frames (an animation); {frames_hint(path)}")


def output_names(files: list[Path], root: Path | None = None) -> list[Path]:
    """The name each input's outputs are written under, relative to the output folder: its stem, in
    the subfolder it has under ``root`` (the input folder); its whole name where two inputs of one
    folder share a stem (``x.png`` and ``x.jpg`` -> ``x.png``, ``x.jpg``), so none is overwritten."""
    relative = [f.relative_to(root) if root is not None else Path(f.name) for f in files]
    stems = Counter(rel.with_suffix("") for rel in relative)
    return [rel.with_suffix("") if stems[rel.with_suffix("")] == 1 else rel for rel in relative]


def prediction_files(out_dir: Path, name: Path) -> tuple[Path, Path]:
    """Where ``predict_job`` writes the mask and the overlay of the input named ``name``."""
    return out_dir / name.parent / f"{name.name}_mask.png", out_dir / name.parent / f"{name.name}_overlay.png"


class Segmenter:
    """A trained network ready to segment images: ``Segmenter(checkpoint)(image)`` is the class-id
    mask of an RGB image (a uint8 HxWx3 array, a PIL image or an image file) at the image's own
    size. A network trained on images resized to one size (the checkpoint's ``data.base_size``)
    sees each image resized to it, and its logits are resized back, as ``segnas predict`` and
    ``segnas eval`` do; ``base_size`` chooses another size (None or "native": each image's own).
    ``classes`` names the mask's ids and their colours; ``colorize`` paints a mask in them.
    ``device``: cpu, cuda, cuda:N or auto (on a GPU it computes in true float32, TF32 off, as
    ``segnas eval`` does, and leaves the caller's TF32 switches as they were). ``raw``: the raw
    weights of a checkpoint that also holds their EMA or SWA average."""

    def __init__(self, checkpoint: str | Path, base_size: tuple[int, int] | str | None = CHECKPOINT,
                 bf16: bool = False, device: str = "cpu", raw: bool = False) -> None:
        with exact_fp32():
            where = resolve_device(device)
        #: The checkpoint file the network came from, and whether its raw weights were taken.
        self.checkpoint, self.raw = trained_checkpoint(checkpoint).resolve(), raw
        self.model, self.classes, state, self.weights = load_trained(self.checkpoint, raw)
        self.model.to(where)
        self.size, self.size_from = checkpoint_base_size(state, base_size)
        check_inference_size(self.size, self.classes.num_classes, "base_size")
        self.bf16 = usable_bf16(bf16, device_type=where.type)  # fp32 where the CPU would only emulate bf16
        self._normalize = Normalize()

    def __repr__(self) -> str:
        at = "each image's own size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (f"Segmenter({str(self.checkpoint)!r}, {self.classes.num_classes} classes, {self.weights} weights, "
                f"at {at}, on {module_device(self.model)})")

    def logits(self, image: Any) -> torch.Tensor:
        """Float32 1xCxHxW class scores of ``image`` at its own size, computed without gradients (an
        inference tensor); the network's mode, training or eval, is left as it was."""
        rgb = self.rgb(image)
        check_inference_size(rgb.shape[:2], self.classes.num_classes, "image")  # its logits are of its size
        x, _ = self._normalize(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0, torch.empty(0))
        x = x[None] if self.size is None else F.interpolate(x[None], size=self.size, mode="bilinear",
                                                             align_corners=False)
        with exact_fp32():
            logits = predict_logits(self.model, x, self.bf16)
        if logits.shape[-2:] != rgb.shape[:2]:
            logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        return logits

    def __call__(self, image: Any) -> np.ndarray:
        """The uint8 HxW mask of class ids (``classes.names[i]`` is class ``i``)."""
        return self.logits(image).argmax(1)[0].cpu().numpy().astype(np.uint8)

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """A uint8 HxWx3 picture of ``mask`` (class ids) in the classes' colours."""
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.dtype.kind not in "ui":
            raise SegnasError(f"mask: expected an HxW array of class ids, got shape {mask.shape} and dtype {mask.dtype}")
        ids = mask[mask != IGNORE_INDEX]  # (ignored pixels are drawn black, as colorize draws them)
        if ids.size and int(ids.max()) >= len(self.classes.names):
            raise SegnasError(f"mask: class id {int(ids.max())}, but the network has {len(self.classes.names)} "
                              "classes")
        if ids.size and int(ids.min()) < 0:
            raise SegnasError(f"mask: class id {int(ids.min())}: class ids are 0 or more ({IGNORE_INDEX}: ignored)")
        return colorize(mask, self.classes.palette())

    @staticmethod
    def rgb(image: Any) -> np.ndarray:
        """``image`` as a uint8 HxWx3 RGB array: a file is read as ``segnas predict`` reads it (EXIF
        orientation applied), a PIL image converted, an array checked."""
        if isinstance(image, (str, Path)):
            check_image_file(Path(image))
            return read_image(Path(image))
        if isinstance(image, Image.Image):
            return image_rgb(image, "image")
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
            raise SegnasError(f"image: expected a uint8 HxWx3 RGB array, a PIL image or an image file, got an array "
                              f"of shape {array.shape} and dtype {array.dtype}")
        # a view such as BGR frame[..., ::-1] has negative strides; PIL's np.asarray is read-only (torch warns)
        return np.ascontiguousarray(array) if array.flags.writeable else array.copy()


def predict_job(checkpoint: str | Path, inputs: str | Path, out_dir: str | Path, alpha: float = 0.5,
                bf16: bool = False, progress: bool = True, base_size: tuple[int, int] | None | str = CHECKPOINT,
                echo: Echo | None = None, skip_unreadable: bool = False, ids: bool = False) -> list[Path]:
    """Write ``<name>_mask.png`` (colourized classes; with ``ids`` a palette-mode PNG whose pixels
    are the class ids and whose palette the classes' colours: viewers show the same colours, and a
    folder dataset reads it as labels) and ``<name>_overlay.png`` for each input
    image (``name``: its stem, its whole file name where stems repeat; in the subfolder it has in
    the input folder), at the image's own size.
    Each image is resized to the size the network was trained at (the checkpoint's
    ``data.base_size``, as ``eval_job`` scores it) unless ``base_size`` is given (None: native
    size), and its logits resized back; any size works (the network pads to its stride).
    Every frame is read before any output is written: an unreadable one is an error, or with
    ``skip_unreadable`` left out (said through ``echo``: how many, and the first with why)."""
    if not 0.0 <= alpha <= 1.0:
        raise SegnasError(f"--alpha: the overlay opacity must be between 0 and 1, got {alpha:g}")
    out_dir = Path(out_dir)
    RunDir.check_parent(out_dir, "--out")  # a file, or a folder that cannot be written
    segmenter = Segmenter(checkpoint, base_size, bf16)
    files, unreadable = collect_inputs(inputs, out_dir), []
    for f in files:  # a damaged or too large frame is found before any output is written
        try:
            shape = check_image_file(f)
            check_still_image(f)
        except SegnasError as exc:
            if not skip_unreadable:
                raise SegnasError(f"{exc} (--skip-unreadable leaves such frames out)") from None
            unreadable.append((f, str(exc)))
            continue
        check_inference_size(shape, segmenter.classes.num_classes, str(f))
    if unreadable:
        if len(unreadable) == len(files):
            raise SegnasError(f"{inputs}: no readable image ({unreadable[0][1]})")
        (echo or (lambda m: None))(f"note: {len(unreadable)} unreadable image(s) left out; the first: "
                                   f"{unreadable[0][1]}")
        skipped = {f for f, _ in unreadable}
        files = [f for f in files if f not in skipped]
    names = output_names(files, Path(inputs) if Path(inputs).is_dir() else None)
    inputs_at = {f.resolve() for f in files}
    for name in names:
        for target in prediction_files(out_dir, name):
            if target.resolve() in inputs_at:
                raise SegnasError(f"--out {out_dir}: the prediction {target} would replace an input image; "
                                  "choose another folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegnasError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    if echo:
        at = f"{segmenter.size[0]}x{segmenter.size[1]}" if segmenter.size else "each image's own size"
        echo(f"predicting at {at} ({segmenter.size_from})")
    written = []
    with task_progress("predict", len(files), progress) as ticker:
        for f, name in zip(files, names):
            image = read_image(f)
            mask = segmenter(image)
            colors = segmenter.colorize(mask)
            mask_file, overlay_file = prediction_files(out_dir, name)
            if ids:
                save_png(mask_file, mask, palette=segmenter.classes.palette()[:-1])
            else:
                save_png(mask_file, colors)  # (atomic_write makes the subfolder)
            save_png(overlay_file, overlay(image, colors, alpha))
            written.append(mask_file)
            ticker.advance()
    return written
