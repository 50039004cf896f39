"""Checking a dataset's files before a job starts, so that a bad file is a one-line error up front
instead of a failure mid-epoch (or a worker traceback) that leaves an empty run directory behind.

For every image/label pair of the splits a job reads (``PairDataset.check_pair``): the image's
header and integrity (a truncated file fails), every label value (declared classes or ignore
values) or mask colour (in the palette or ignored), and that image and label sizes agree; over the
training split, that its masks hold at least two classes (a declared class none holds is named).
Pairs are checked in a thread pool, with a progress bar on a terminal for large datasets.

Checks are cached: a pair that passed is not read again while both its files keep their size and
modification time. The cache lives in segnas's cache folder (``$SEGNAS_CACHE``, else
``~/.cache/segnas``: ``datasets/<key>.json``, one file per dataset folder, class list and label
mode), not next to the data, which may be read-only or shared. A second start on unchanged data
only reads the files' metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segnas.config.train import DataConfig
from segnas.data.base import IGNORE_INDEX, PairCheck, PairDataset
from segnas.errors import SegnasError
from segnas.progress import Echo, progress_bar
from segnas.utils import atomic_write_text, cache_dir

CACHE_VERSION = 4  # 2: with the classes each mask holds; 3: and whether it has ignored pixels; 4: JPEG masks refused
#: Datasets with at least this many pairs to read get a progress bar (on a terminal) and a notice.
LARGE = 200


@dataclass
class SplitReport:
    """What checking one split found: its size in samples, its largest image (H, W) and, when its
    images differ in size, one of another size."""

    split: str
    name: str
    samples: int
    max_size: tuple[int, int] | None = None
    read: int = 0  # pairs read now (the others were unchanged since a check that passed)
    other_size: tuple[int, int] | None = None
    classes: frozenset[int] | None = None  # the train ids its masks hold, and IGNORE_INDEX (None: not read)
    class_names: tuple[str, ...] = ()
    tallest_widest: tuple[int, int] | None = None  # the largest height and the largest width (of any images)

    def absent_classes(self) -> list[str]:
        """The declared classes no mask of this split holds, as ``'name' (id)`` (none when its masks
        were not read)."""
        if self.classes is None:
            return []
        return [f"{name!r} ({c})" for c, name in enumerate(self.class_names) if c not in self.classes]

    def note_unscored_classes(self, echo: Echo) -> None:
        """Say which declared classes no mask of this split holds: a mean IoU over it leaves such a
        class out, unless a network predicts it somewhere (its IoU is then 0, the usual definition)."""
        if missing := self.absent_classes():
            it = "it" if len(missing) == 1 else "them"
            echo(f"note: no {self.split} mask holds class(es) {', '.join(missing)}: mIoU leaves {it} out where no "
                 f"pixel is predicted as {it}, and counts an IoU of 0 where some are")


@dataclass
class DataReport:
    """The checked splits of a data settings section, by split name."""

    splits: dict[str, SplitReport] = field(default_factory=dict)

    def train_sample_size(self, cfg: DataConfig) -> tuple[tuple[int, int] | None, str]:
        """The (H, W) of one training sample and the setting that decides it: the crop size, else the
        base size, else the largest training image."""
        if cfg.crop_size is not None:
            return tuple(cfg.crop_size), "data.crop_size"
        if cfg.base_size is not None:
            return tuple(cfg.base_size), "data.base_size"
        report = self.splits.get(cfg.train_split)
        return (report.max_size if report else None), f"the largest {cfg.train_split} image"

    def note_padded_crops(self, cfg: DataConfig, echo: Echo | None) -> None:
        """Say so when the training crop is larger than every training image even at the largest
        random scale: every crop is then padded with ignored pixels (time spent on nothing)."""
        report = self.splits.get(cfg.train_split)  # (the tallest and the widest: of any images, so surely every one)
        source = tuple(cfg.base_size) if cfg.base_size is not None else (report.tallest_widest if report else None)
        if echo is None or cfg.crop_size is None or source is None:
            return
        (ch, cw), (h, w), high = cfg.crop_size, source, cfg.scale[1]
        if h * high < ch or w * high < cw:
            images = f"data.base_size {h}x{w}" if cfg.base_size is not None else \
                f"every {cfg.train_split} image (at most {h} high, {w} wide)"
            echo(f"note: the {ch}x{cw} training crop (data.crop_size) is larger than {images}, even at the "
                 f"largest random scale (x{high:g}): every crop is padded with ignored pixels, which costs time "
                 f"and teaches nothing; give a crop within the images")

    def check_training_classes(self, cfg: DataConfig, echo: Echo | None = None) -> None:
        """Refuse training masks that hold fewer than two classes (nothing to tell apart: e.g. a
        two-class mask saved as 0/255, whose 255 is ignore), and say which declared classes no
        training mask holds (a network cannot learn them)."""
        report = self.splits.get(cfg.train_split)
        if report is None or report.classes is None or not report.class_names:
            return
        names = report.class_names
        learnable = report.classes - {IGNORE_INDEX}
        if len(learnable) < 2:
            held = ", ".join(f"{names[c]!r} ({c})" for c in sorted(learnable)) or "none"
            why = (f"every other pixel is ignore ({IGNORE_INDEX}), so there is nothing to learn: masks must hold class "
                   f"indices 0..{len(names) - 1} (a two-class mask saved as 0/{IGNORE_INDEX} must be saved as 0/1)"
                   if IGNORE_INDEX in report.classes else "there is nothing to tell apart")
            raise SegnasError(f"{report.name}: the {cfg.train_split} masks hold pixels of fewer than two classes "
                              f"(held: {held}); {why}")
        missing = report.absent_classes()
        if missing and echo is not None:
            echo(f"note: no {cfg.train_split} mask holds class(es) {', '.join(missing)}: the network cannot learn "
                 f"{'it' if len(missing) == 1 else 'them'}")

    def check_whole_image_batches(self, cfg: DataConfig) -> None:
        """Refuse, before training, batches of whole training images (no crop or base size) whose
        images differ in size: they cannot be stacked into one batch."""
        report = self.splits.get(cfg.train_split)
        if cfg.crop_size is None and cfg.base_size is None and cfg.batch_size > 1 and report and report.other_size:
            (h1, w1), (h2, w2) = report.max_size, report.other_size
            raise SegnasError(f"data.crop_size: the {cfg.train_split} images differ in size ({h1}x{w1}, {h2}x{w2}), "
                              f"so whole images cannot form batches of {cfg.batch_size}: give training crops "
                              "(data.crop_size; --size) or data.base_size (every image resized to it)")


def validate_dataset(cfg: DataConfig, progress: bool = True, echo: Echo | None = None
                     ) -> DataReport:
    """Check every file of the training and validation splits ``cfg`` names; a one-line SegnasError
    naming the file and the problem if one is bad."""
    report = DataReport()
    for split in dict.fromkeys(s for s in (cfg.train_split, cfg.val_split) if s):
        report.splits[split] = validate_split(cfg.name, cfg.root, split, cfg.options, progress, echo)
    report.check_training_classes(cfg, echo)
    if cfg.val_split and echo is not None:
        report.splits[cfg.val_split].note_unscored_classes(echo)
    return report


def validate_split(name: str, root: str | None, split: str, options: dict[str, Any] | None = None,
                   progress: bool = True, echo: Echo | None = None) -> SplitReport:
    """Check every file of one split of dataset ``name`` (as ``validate_dataset`` does for the training
    and validation splits): for a split scored later (``segnas eval``, a comparison's test split)."""
    from segnas.data import build_dataset  # the package's registry imports this module

    dataset = build_dataset(name, root, split, None, cache=False, **(options or {}))
    if isinstance(dataset, PairDataset):
        return check_pairs(dataset, split, progress, echo)
    size = getattr(dataset, "size", None)  # generated data (synthetic): nothing to read
    size = tuple(size) if size is not None else None
    return SplitReport(split, getattr(dataset, "name", name), len(dataset), size, tallest_widest=size)


def check_pairs(dataset: PairDataset, split: str, progress: bool = True,
                echo: Echo | None = None, threads: int | None = None) -> SplitReport:
    """Check every pair of ``dataset`` not unchanged since it last passed (see the module doc)."""
    if dataset.left_out and echo is not None:
        first = dataset.left_out[0]
        echo(f"note: {len(dataset.left_out)} label file(s) of {dataset.name} have no image of their name and are "
             f"left out (first: {first.parent.name}/{first.name})")
    cache = _CheckCache(dataset)
    checks: dict[int, PairCheck] = {}
    todo = []
    for i, (img, lab) in enumerate(dataset.pairs):
        known = cache.lookup(img, lab)
        if known is None:
            todo.append(i)
        else:
            checks[i] = known
    errors: dict[int, SegnasError] = {}
    if todo:
        if len(todo) >= LARGE and echo is not None:
            echo(f"checking {len(todo)} image/label pairs of {dataset.name} (once: unchanged files are not "
                 f"read again)")
        threads = threads or max(1, min(16, os.cpu_count() or 1, len(todo)))
        with progress_bar(progress and len(todo) >= LARGE) as bar, ThreadPoolExecutor(threads) as pool:
            task = bar.add_task(f"checking {dataset.name}", total=len(todo), info="") if bar else None
            futures = {pool.submit(dataset.check_pair, i): i for i in todo}
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                i, exc = futures[fut], fut.exception()
                if exc is None:
                    checks[i] = fut.result()
                    cache.store(*dataset.pairs[i], checks[i])
                elif isinstance(exc, SegnasError):
                    if not errors:  # one bad file is enough to refuse the data: stop soon
                        for other in futures:
                            other.cancel()
                    errors[i] = exc
                else:
                    raise exc
                if bar is not None:
                    bar.update(task, advance=1)
        cache.save()
    if errors:
        first = min(errors)
        more = f" ({len(errors) - 1} more bad pair(s) found before the check stopped)" if len(errors) > 1 else ""
        raise SegnasError(f"{errors[first]}{more}")
    sizes = [check.size for check in checks.values()]
    max_size = max(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else None
    other = next((hw for hw in sizes if hw != max_size), None)
    held = frozenset().union(*(check.classes for check in checks.values()))
    extent = (max(h for h, _ in sizes), max(w for _, w in sizes)) if sizes else None
    return SplitReport(split, dataset.name, len(dataset), max_size, len(todo), other, held, dataset.classes.names,
                       extent)


class _CheckCache:
    """Pairs that passed, by their files' resolved paths, with both files' size and mtime."""

    def __init__(self, dataset: PairDataset) -> None:
        signature = getattr(dataset.mapper, "signature", None)
        self.path: Path | None = None
        self.entries: dict[str, list] = {}
        self.changed = False
        if signature is None or not dataset.pairs:
            return  # a mapper that cannot say what it accepts: check every time
        folder = dataset.pairs[0][0].resolve().parent
        key = json.dumps([CACHE_VERSION, type(dataset).__name__, signature(), dataset.label_mode, str(folder)])
        self.path = cache_dir() / "datasets" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("pairs"), dict):
                self.entries = data["pairs"]
        except (OSError, ValueError):  # none yet, or unreadable: check everything again
            pass

    @staticmethod
    def _key(img: Path, lab: Path) -> str:
        return f"{img.resolve()}\t{lab.resolve()}"

    @staticmethod
    def _stamp(img: Path, lab: Path) -> list[int] | None:
        try:
            a, b = img.stat(), lab.stat()
        except OSError:
            return None
        return [a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns]

    def lookup(self, img: Path, lab: Path) -> PairCheck | None:
        """What checking this pair found if it passed and neither file changed since; else None."""
        if self.path is None:
            return None
        entry = self.entries.get(self._key(img, lab))
        stamp = self._stamp(img, lab)
        if not isinstance(entry, list) or len(entry) != 7 or stamp is None or entry[:4] != stamp:
            return None
        return PairCheck((int(entry[4]), int(entry[5])), frozenset(int(c) for c in entry[6]))

    def store(self, img: Path, lab: Path, check: PairCheck) -> None:
        stamp = self._stamp(img, lab)
        if self.path is not None and stamp is not None:
            self.entries[self._key(img, lab)] = [*stamp, int(check.size[0]), int(check.size[1]), sorted(check.classes)]
            self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        try:
            atomic_write_text(self.path, json.dumps({"version": CACHE_VERSION, "pairs": self.entries}))
        except OSError:  # a read-only cache folder: the next start checks again
            pass
