"""Benchmark and export jobs: parameters, FLOPs, latency per backend, efficiency, ONNX/TorchScript."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import segnas

from segnas.cost import (check_parity, count_flops, count_parameters, export_onnx, export_torchscript,
                         measure_latency)
from segnas.cost.backends import check_backend, onnxruntime_runner
from segnas.cost.export import set_onnx_metadata
from segnas.cost.quantize import INT8_PRECISION, OnnxNetwork, onnx_precision, quantization_parameters, quantize_onnx
from segnas.cost.latency import default_threads, runners_interleaved, summarize, time_callable
from segnas.cost.machine import busiest, is_busy, machine_record, matmul_peak_gflops, other_processes_cores
from segnas.cost.memory import check_inference_size
from segnas.data import eval_transforms
from segnas.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segnas.engine.device import resolve_device
from segnas.engine.evaluate import evaluate
from segnas.errors import SegnasError
from segnas.jobs.evaluate import TickingDataset, checked_split, checkpoint_base_size, with_training_options
from segnas.progress import Echo, task_progress
from segnas.spaces import read_arch_file
from segnas.training.models import load_trained, resolve_model, trained_checkpoint
from segnas.utils import check_output_file, parse_size


#: Class count of zoo names and architecture files when neither ``--classes`` nor the file gives one.
DEFAULT_CLASSES = 19


def network_source(source: str) -> str:
    """``source`` as a file or zoo name: a training's or search's run folder stands for its trained
    checkpoint (``trained_checkpoint``), so that it is measured and exported as that checkpoint."""
    return str(trained_checkpoint(source)) if Path(source).is_dir() else source


def network_classes(source: str, num_classes: int | None) -> tuple[int, str]:
    """The class count a benchmarked network is built with, and where it comes from: a
    checkpoint's classes, an architecture file's ``num_classes``, ``num_classes``, or the default."""
    path = Path(network_source(source))
    if path.suffix == ".pt":
        classes = load_trained(path)[1]
        return classes.num_classes, "checkpoint"
    if path.suffix == ".json":
        saved = read_arch_file(path).get("num_classes")
        if num_classes is None and saved is not None:
            return int(saved), "arch file"
    if num_classes is not None:
        return num_classes, "--classes"
    return DEFAULT_CLASSES, "default; give --classes"


def refuse_other_classes(source: str, own: int | None, num_classes: int | None) -> None:
    """SegnasError when ``--classes`` asks a checkpoint (of ``own`` classes) for another class count."""
    if own is not None and num_classes is not None and num_classes != own:
        raise SegnasError(f"--classes {num_classes}: {source} was trained for {own} classes and is built with "
                          "them; leave --classes out")


def own_size(source: str, trained: tuple[Any, ...] | None) -> tuple[int, int] | None:
    """The size a network is measured and exported at when none is given: a checkpoint's training
    size (``data.base_size``), else the size its search targeted (an arch file's ``size``, kept in a
    checkpoint trained from one, at each image's own size too: the size its latency target holds
    for); None when it has neither (a zoo network, a hand-written arch file or a checkpoint of one
    trained at each image's own size). ``trained``: what ``load_trained`` returned for ``source``."""
    if trained:
        base = checkpoint_base_size(trained[2])[0]
        if base:
            return base
        spec = trained[2].get("model_spec") or {}
    elif Path(source).suffix.lower() == ".json":
        spec = read_arch_file(source)
    else:
        return None
    size = spec.get("size")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return (size[0], size[1])
    return None


def read_onnx(path: Path) -> Any:
    """The ONNX model in ``path``; SegnasError when it is missing or not ONNX."""
    import onnx

    if not path.is_file():
        raise SegnasError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not ONNX
        raise SegnasError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def onnx_size(path: Path, model: Any, size: tuple[int, int] | None) -> tuple[int, int]:
    """The input size an ONNX model is measured at: ``size``, which a static graph must take, or
    for None a static graph's own (a dynamic one's ``trained_size``, else DEFAULT_EXPORT_SIZE)."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise SegnasError(f"{path}: input {dims} is not (batch, 3, H, W): not an image segmenter")
    static = dims[2:]
    if all(d is None for d in static):
        trained = next((p.value for p in model.metadata_props if p.key == "trained_size"), "native")
        own = parse_size(trained, f"{path}: metadata trained_size") if trained != "native" else DEFAULT_EXPORT_SIZE
        return tuple(size or own)
    if size is None and None not in static:
        return (static[0], static[1])
    if size is None or any(d is not None and d != s for d, s in zip(static, size)):
        fixed = "x".join(str(d) if d is not None else "?" for d in static)
        raise SegnasError(f"{path}: exported for input {dims} (batch, channels, H, W); give --size {fixed}"
                          f"{' (?: any)' if None in static else ''} or export with --dynamic")
    return tuple(size)


def _onnx_row(path: Path, model: Any, size: tuple[int, int], threads: int, device: str,
              min_time_s: float) -> dict[str, Any]:
    """The row of an exported ONNX file: parameters from its initializers, latency on ONNX Runtime
    (FLOPs are not counted from ONNX graphs)."""
    from onnx import numpy_helper

    scales = quantization_parameters(model)
    params = sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in model.graph.initializer if t.name not in scales)
    shape = (1, 3, *size)
    run = onnxruntime_runner(path, threads, device)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    classes = int(run(x).shape[1])
    lat = summarize(time_callable(lambda: run(x), 3, 10, min_time_s), "onnxruntime", shape, threads, device)
    return {"backend": "onnxruntime", "precision": onnx_precision(model), "size": f"{size[0]}x{size[1]}",
            "threads": threads, "classes": classes, "classes_from": "ONNX file", "params_m": params / 1e6,
            "gflops": None, "gmacs": None, "median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms, "fps": lat.fps,
            "runs": lat.runs,
            "achieved_gflops_s": None, "fraction_of_peak": None}


#: Random inputs an int8 graph is calibrated on when ``bench`` times it (its speed, not its accuracy).
BENCH_CALIBRATION_INPUTS = 4


def _int8_row(model: torch.nn.Module, size: tuple[int, int], threads: int, min_time_s: float) -> dict[str, Any]:
    """The row of ``model`` as an int8 ONNX graph calibrated on random inputs (``_onnx_row``)."""
    import onnx

    shape = (1, 3, *size)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="segnas-bench-int8-") as work:
        fp32, quantized = Path(work) / "float.onnx", Path(work) / "int8.onnx"
        export_onnx(model, fp32, shape)
        quantize_onnx(fp32, quantized, (rng.standard_normal(shape, dtype=np.float32)
                                        for _ in range(BENCH_CALIBRATION_INPUTS)))
        return {**_onnx_row(quantized, onnx.load(str(quantized)), size, threads, "cpu", min_time_s),
                "calibration": "random inputs: latency only"}


def bench_job(sources: Sequence[str], size: tuple[int, int] | str | None, backends: Sequence[str],
              threads: int | None = None, num_classes: int | None = None, device: str = "cpu",
              min_time_s: float = 2.0, echo: Echo | None = None, progress: bool = True,
              int8: bool = False) -> list[dict[str, Any]]:
    """One row per (network, backend): class count, params, GFLOPs/GMACs, median/IQR latency, FPS,
    achieved GFLOP/s and its fraction of this machine's fp32 matmul peak, the ``precision`` it
    computes in (fp32 on every backend; an ONNX file's own: int8 when quantized), the machine
    (``machine_record``) and the load around the measurement. Sources: zoo names, architecture
    files, checkpoints, run folders and exported ``.onnx`` files, each row labelled as given
    (``model``). The class count is a checkpoint's or ONNX file's own, else an architecture
    file's ``num_classes``, else ``num_classes``, else DEFAULT_CLASSES (each row says which).
    ``size``: (H, W) or "HxW"; None: each network's own (``own_size``; a static ONNX file's input, a
    dynamic one's ``trained_size``), else DEFAULT_EXPORT_SIZE. An ONNX file runs on onnxruntime alone: its pairs
    with other backends are left out, said through ``echo`` (with the other notes). ``int8``: each
    network (not an ONNX file) is also timed as an int8 ONNX graph on ONNX Runtime, quantized as
    ``segnas export --int8`` quantizes but calibrated on random inputs: its speed, not its accuracy."""
    sources, backends = [sources] if isinstance(sources, str) else sources, \
        [backends] if isinstance(backends, str) else backends  # (one given as a string, from Python)
    size = parse_size(size, "--size") if size is not None else None
    if num_classes is not None and num_classes < 1:
        raise SegnasError(f"--classes: must be >= 1, got {num_classes}")
    for backend in backends:
        check_backend(backend, "--backend")
    if threads is not None and threads < 1:
        raise SegnasError(f"--threads: must be >= 1, got {threads} (leave it out for all cores available)")
    cores = default_threads()
    say = echo or (lambda message: None)
    if threads is not None and threads > cores:
        say(f"note: {threads} threads on {cores} available cores: the threads share cores, and the timings are "
            "of an oversubscribed CPU (the matmul peak is measured on the cores there are)")
    threads = threads or cores
    resolve_device(device)
    if int8 and (device != "cpu" or "onnxruntime" not in backends):
        raise SegnasError("--int8: times ONNX Runtime's int8 graph on the CPU; add -b onnxruntime (and leave out "
                          "--device)")
    if device != "cpu" and "openvino" in backends:
        raise SegnasError("--backend: openvino is measured on the CPU only here (leave out --device)")
    networks = []  # everything that can fail on user input, before anything is measured
    for given in map(str, sources):
        source = network_source(given)
        if Path(source).suffix.lower() == ".onnx":
            if "onnxruntime" not in backends:
                raise SegnasError(f"{source}: an ONNX file is measured on onnxruntime only, not "
                                  f"{', '.join(backends)} (add -b onnxruntime)")
            onnx_model = read_onnx(Path(source))
            if len(backends) > 1:
                say(f"note: {given}: an ONNX file is measured on onnxruntime only "
                    f"({', '.join(b for b in backends if b != 'onnxruntime')} left out for it)")
            networks.append((given, source, onnx_model, onnx_size(Path(source), onnx_model, size), 0, ""))
            continue
        trained = load_trained(source) if Path(source).suffix == ".pt" else None
        refuse_other_classes(given, trained[1].num_classes if trained else None, num_classes)
        classes, where = (trained[1].num_classes, "checkpoint") if trained else network_classes(source, num_classes)
        own = size or own_size(source, trained) or DEFAULT_EXPORT_SIZE
        check_inference_size(own, classes)
        model = trained[0] if trained else resolve_model(source, classes)[0]
        networks.append((given, source, model, tuple(own), classes, where))
    if int8 and any(isinstance(n[2], torch.nn.Module) for n in networks):
        say("note: the int8 rows time each network's int8 graph calibrated on random inputs: its latency, not its "
            "accuracy (segnas export --int8 quantizes a trained checkpoint on its data and scores it)")
    load_before = other_processes_cores()
    peak = matmul_peak_gflops(min(threads, cores))
    rows = []
    with task_progress("bench", len(networks) * (len(backends) + int8), progress) as ticker:
        for given, source, model, at, classes, where in networks:
            if not isinstance(model, torch.nn.Module):
                rows.append({"model": given, **_onnx_row(Path(source), model, at, threads, device, min_time_s),
                             "peak_gflops_s": peak})
                ticker.advance(len(backends))
                continue
            shape = (1, 3, *at)
            params = count_parameters(model)
            flops = count_flops(model, shape)
            for backend in backends:
                lat = measure_latency(model, shape, backend, threads, device, min_time_s=min_time_s)
                achieved = flops.gflops / (lat.median_ms / 1000.0)
                rows.append({"model": given, "backend": backend, "precision": "fp32", "size": f"{at[0]}x{at[1]}",
                             "threads": threads,
                             "classes": classes, "classes_from": where,
                             "params_m": params / 1e6, "gflops": flops.gflops, "gmacs": flops.gmacs,
                             "median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms, "fps": lat.fps, "runs": lat.runs,
                             "achieved_gflops_s": achieved, "peak_gflops_s": peak,
                             "fraction_of_peak": achieved / peak})
                ticker.advance(info=f"{given} {backend}")
            if int8:
                rows.append({"model": given, **_int8_row(model, at, threads, min_time_s), "classes_from": where,
                             "gflops": flops.gflops, "gmacs": flops.gmacs, "peak_gflops_s": peak})
                ticker.advance(info=f"{given} int8")
    others = busiest(load_before, other_processes_cores())
    machine = machine_record(device)
    for row in rows:  # what the figures hold for: the machine, and a busy host runs every network slower
        row["other_processes_cores"] = others
        row["machine"] = machine
    if is_busy(others):
        say(busy_warning(others))
    return rows


def busy_warning(others: float) -> str:
    """The line that says a measurement was taken beside other work."""
    return (f"warning: other processes kept {others:.1f} cores busy around the measurement: these latencies are "
            "slower than this machine alone runs them (measure on a quiet machine)")


def export_metadata(source: str, num_classes: int, size: tuple[int, int], dynamic: bool,
                    trained: tuple | None = None) -> dict[str, str]:
    """What an exported file tells whoever runs it (an ONNX file's metadata properties, a TorchScript
    archive's ``segnas.json``): the input it expects (RGB in [0, 1], normalized by ``mean`` and
    ``std``; the size it was exported at; how a frame is resized to it), where it came from, and for
    a checkpoint (``trained``: what ``load_trained`` returned for it) the classes of its output
    channels, their colours and the size it was trained at."""
    meta = {"segnas_version": segnas.__version__, "source": str(source), "num_classes": str(num_classes),
            "input": "image: float32 NCHW, RGB scaled to [0, 1], then (x - mean) / std per channel",
            "output": "logits: float32 NCHW at the input size, one channel per class; argmax over C gives the mask",
            "resize": "bilinear with half-pixel centres and no antialiasing (torch's interpolate, "
                      "align_corners=False): a frame to the size the network takes, and its logits back to the "
                      "frame's size before the argmax",
            "mean": json.dumps(list(IMAGENET_MEAN)), "std": json.dumps(list(IMAGENET_STD)),
            "exported_size": "any (dynamic batch, height, width)" if dynamic else f"{size[0]}x{size[1]}",
            "precision": "fp32"}
    if trained:
        _, info, state, weights = trained
        base = checkpoint_base_size(state)[0]
        meta.update(classes=json.dumps(list(info.names)), palette=json.dumps([list(c) for c in info.colors]),
                    weights=weights, trained_size=f"{base[0]}x{base[1]}" if base else "native")
    return meta


#: The size an export is traced and checked at when neither ``--size`` nor the checkpoint gives one.
DEFAULT_EXPORT_SIZE = (360, 480)


def check_replaceable(out: Path, source: str, fmt: str) -> None:
    """Refuse an ``out`` that an export would replace and should not: the network being exported, or
    an existing file that is not an earlier export of ``fmt`` (a checkpoint, a file of the user's)."""
    if not out.is_file():
        return
    if Path(source).is_file() and out.resolve() == Path(source).resolve():
        raise SegnasError(f"--out {out}: is the network being exported; give another file")
    if not is_export(out, fmt):
        kind = {"onnx": "an ONNX", "torchscript": "a TorchScript"}[fmt]
        raise SegnasError(f"--out {out}: exists and is not {kind} file (an export replaces an earlier export, "
                          "nothing else); remove it or give another file")


def is_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` holds an exported network of ``fmt``: an ONNX graph, or a TorchScript archive
    (a zip with code, which a checkpoint saved by torch.save lacks)."""
    import zipfile

    if fmt == "torchscript":
        try:
            with zipfile.ZipFile(path) as archive:
                return any("/code/" in name for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # (onnx raises DecodeError and others for a file that is not ONNX)
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


@dataclass(frozen=True)
class Int8Settings:
    """What ``export_job`` quantizes with: images of dataset ``data`` (None: the checkpoint's own
    training data; ``root``: its folder, else the checkpoint's when the dataset is its own) to
    calibrate on, from its train split, and the largest loss of val mIoU (points) accepted against
    the float graph."""

    data: str | None = None
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    calibration_images: int = 64
    max_drop: float = 1.0


#: ``int8_settings``'s arguments (``Int8Settings``'s fields and the switch) as the command line names them.
INT8_OPTIONS = {"int8": "--int8", "data": "--data", "root": "--data-root", "options": "--data-option",
                "calibration_images": "--calibration-images", "max_drop": "--max-drop"}


def int8_settings(int8: bool, names: Mapping[str, str] = INT8_OPTIONS, **given: Any) -> Int8Settings | None:
    """The ``Int8Settings`` of an export (None without ``int8``) from ``given`` (``Int8Settings``'s
    fields, None for a default), checked; one given without ``int8`` is refused. Errors name them as
    ``names`` says."""
    given = {k: v for k, v in given.items() if v not in (None, {})}
    if not int8:
        if given:
            raise SegnasError(f"{', '.join(names[k] for k in given)}: settings of an int8 export; add {names['int8']}")
        return None
    settings = Int8Settings(**given)
    if settings.calibration_images < 1:
        raise SegnasError(f"{names['calibration_images']}: must be >= 1, got {settings.calibration_images}")
    if not settings.max_drop >= 0:
        raise SegnasError(f"{names['max_drop']}: points of mIoU >= 0, got {settings.max_drop:g}")
    return settings


@dataclass(frozen=True)
class Int8Check:
    """A quantized graph scored against its float graph on the same images."""

    data: str
    split: str
    images: int
    calibration_images: int
    float_miou: float
    int8_miou: float
    threads: int
    #: Both graphs' median latency here (timed once the check has passed).
    float_ms: float | None = None
    int8_ms: float | None = None

    @property
    def drop(self) -> float:
        """mIoU points lost to quantization."""
        return 100 * (self.float_miou - self.int8_miou)

    def describe(self) -> str:
        return (f"int8 on {self.data} {self.split} ({self.images} images): mIoU {100 * self.int8_miou:.1f}%, float "
                f"graph {100 * self.float_miou:.1f}% ({round(-self.drop, 1) + 0.0:+.1f} points); calibrated on "
                f"{self.calibration_images} {self.data} train images")

    def speed(self) -> str:
        """The two graphs' latency here, and a warning when the int8 one is not the faster."""
        threads = f"{self.threads} thread{'s' * (self.threads != 1)}"
        line = (f"int8 {self.int8_ms:.2f} ms, float graph {self.float_ms:.2f} ms on ONNX Runtime here ({threads}): "
                f"{self.float_ms / self.int8_ms:.2f}x")
        if self.int8_ms < self.float_ms:
            return line
        return (f"warning: {line}: the int8 graph is not faster on this CPU (integer kernels pay off on CPUs with "
                "VNNI and on wide layers); measure it on the deployment CPU with segnas bench")


def _int8_data(settings: Int8Settings, trained: tuple, source: str, size: tuple[int, int],
               progress: bool, echo: Echo | None) -> tuple[str, Any, Any]:
    """The dataset an int8 export calibrates on (train split) and is checked on (val), at ``size``,
    checked before any work: (its name, the train split, the val split)."""
    _, classes, state, _ = trained
    own = (state.get("config") or {}).get("data") or {}
    name = settings.data or own.get("name")
    if not name:
        raise SegnasError(f"--int8: {source} does not name the data it trained on; give --data (and --data-root)")
    root = settings.root if settings.root is not None else own.get("root") if name == own.get("name") else None
    options = with_training_options(name, settings.options, state, echo)
    train, val = (checked_split(name, root, split, options, eval_transforms(size), classes.names, f"{source}:",
                                "the int8 check would score other classes", progress, echo)[0]
                  for split in ("train", "val"))
    return name, train, val


def _quantize_checked(trial: Path, out: Path, classes: int, size: tuple[int, int], name: str, train: Any, val: Any,
                      settings: Int8Settings, metadata: dict[str, str], progress: bool) -> Int8Check:
    """``trial`` (a checked float ONNX graph) quantized to ``out``, calibrated on evenly spaced images
    of ``train``, both scored on ``val`` and timed at ``size``; SegnasError (``out`` removed) when it loses more than
    ``settings.max_drop`` points of mIoU."""
    count = min(settings.calibration_images, len(train))
    picked = sorted({int(i) for i in np.linspace(0, len(train) - 1, count).round()})
    threads = torch.get_num_threads()
    with task_progress("int8 calibration", len(picked), progress) as ticker:
        def images() -> Any:
            for i in picked:
                yield train[i][0][None].numpy()
                ticker.advance()

        quantize_onnx(trial, out, images(), {**metadata, "precision": INT8_PRECISION})
    scores = []
    for path, label in ((trial, "float"), (out, "int8")):
        with task_progress(f"{label} graph on val", len(val), progress) as ticker:
            scores.append(evaluate(OnnxNetwork(path, threads), TickingDataset(val, ticker), classes, batch_size=1).miou)
    check = Int8Check(name, "val", len(val), len(picked), scores[0], scores[1], threads)
    if check.drop > settings.max_drop:  # (refused before it is timed)
        out.unlink(missing_ok=True)
        raise SegnasError(f"{check.describe()}: loses more than --max-drop {settings.max_drop:g} points; not written "
                          "(calibrate on more images with --calibration-images, or deploy the float export)")
    timed = runners_interleaved({"float": onnxruntime_runner(trial, threads, "cpu"),
                                 "int8": onnxruntime_runner(out, threads, "cpu")}, (1, 3, *size), "onnxruntime",
                                threads, min_runs=15, min_time_s=1.0)
    check = dataclasses.replace(check, float_ms=timed["float"].median_ms, int8_ms=timed["int8"].median_ms)
    set_onnx_metadata(out, {"int8_check": json.dumps({"data": name, "split": "val", "images": len(val),
                                                      "calibration_images": len(picked),
                                                      "float_miou": round(scores[0], 4),
                                                      "int8_miou": round(scores[1], 4)})})
    return check


def export_job(source: str, out: str | Path, size: tuple[int, int] | str | None = None, fmt: str = "onnx",
               dynamic: bool = False, num_classes: int | None = None, tolerance: float = 1e-3,
               progress: bool = True, echo: Echo | None = None,
               int8: Int8Settings | None = None) -> tuple[Path, list]:
    """Export a network and check parity with PyTorch at ``size`` (and a second size when dynamic;
    None: the network's own, ``own_size``, else DEFAULT_EXPORT_SIZE, said through ``echo`` for a
    static graph), saying each check through ``echo``. A file that fails a check is removed, never
    left behind as if it were good. The class count is chosen as in ``bench_job``.

    ``int8``: the checked float graph is quantized (``segnas.cost.quantize``), calibrated on the
    checkpoint's data (or ``int8.data``), and written only when its val mIoU is within
    ``int8.max_drop`` points of the float graph's; the figures are said, and kept in the file's
    metadata (``int8_check``, JSON)."""
    size = parse_size(size, "--size") if size is not None else None
    if fmt not in ("onnx", "torchscript"):
        raise SegnasError(f"--format: expected onnx or torchscript, got {fmt!r}")
    if int8 is not None and fmt != "onnx":
        raise SegnasError("--int8: ONNX Runtime quantizes ONNX graphs; use --format onnx")
    if dynamic and fmt == "torchscript":
        raise SegnasError("--dynamic: TorchScript traces one input size; use --format onnx")
    if num_classes is not None and num_classes < 1:
        raise SegnasError(f"--classes: must be >= 1, got {num_classes}")
    if not tolerance > 0:
        raise SegnasError(f"--tolerance: must be > 0, got {tolerance:g}")
    out = Path(out)
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}[fmt]
    if out.suffix != suffix:  # the parity check and every reader go by the suffix
        kind = {"onnx": "an ONNX", "torchscript": "a TorchScript"}[fmt]
        raise SegnasError(f"--out: {out}: {kind} file must end in {suffix} (--format onnx: .onnx, torchscript: .pt)")
    check_output_file(out, "--out")
    source = network_source(source)
    check_replaceable(out, source, fmt)
    trained = load_trained(source) if Path(source).suffix == ".pt" else None
    if int8 is not None and trained is None:
        raise SegnasError(f"--int8: {source} is not a trained checkpoint: quantization is calibrated on a trained "
                          "network's data and checked against its float graph's mIoU (export a checkpoint or a "
                          "training's run folder)")
    refuse_other_classes(source, trained[1].num_classes if trained else None, num_classes)
    classes = trained[1].num_classes if trained else network_classes(source, num_classes)[0]
    model = trained[0] if trained else resolve_model(source, classes)[0]
    if size is None:
        size = own_size(source, trained)
        if size is None and not dynamic and echo is not None:
            whose = ("the checkpoint was scored at each image's own size" if trained
                     else "a zoo network or an arch file without a search's size has no size of its own")
            echo(f"note: a static graph at {DEFAULT_EXPORT_SIZE[0]}x{DEFAULT_EXPORT_SIZE[1]}, the default ({whose}); "
                 "give --size with your frames' size, or --dynamic for any size")
        size = size or DEFAULT_EXPORT_SIZE
    check_inference_size(size, classes)
    quantized = _int8_data(int8, trained, source, size, progress, echo) if int8 is not None else None
    metadata = export_metadata(source, classes, size, dynamic, trained)
    shape = (1, 3, *size)
    shapes = [shape] + ([(2, 3, size[0] + 13, size[1] + 29)] if dynamic else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    # written and checked beside ``out`` under another name: ``out`` (a file of an earlier export
    # included) is replaced only by a file that passed the parity check
    trial = out.with_name(f".{out.stem}.unchecked{suffix}")
    trial8 = out.with_name(f".{out.stem}.unchecked-int8{suffix}")
    try:
        with task_progress(f"export {out.name}", 1 + len(shapes), progress) as ticker:
            if fmt == "onnx":
                export_onnx(model, trial, shape, dynamic=dynamic, metadata=metadata)
            else:
                export_torchscript(model, trial, shape, metadata)
            ticker.advance(info="parity")
            results = []
            for s in shapes:
                results.append(check_parity(model, trial, s, tolerance))
                ticker.advance()
        bad = [r for r in results if not r.ok]
        kept = " (the earlier file there is kept)" if out.exists() else ""
        if bad:
            r = bad[0]
            raise SegnasError(f"{out}: parity check failed at input {r.input_shape}: max |diff| "
                              f"{r.max_abs_diff:.3g} > tolerance {tolerance:g}; not written{kept}")
        say = echo or (lambda line: None)
        for r in results:
            say(f"parity {r.backend} at {'x'.join(map(str, r.input_shape))}: max |diff| {r.max_abs_diff:.2e} "
                f"(tolerance {r.tolerance:g}) ok")
        if quantized is not None:
            name, train, val = quantized
            try:
                check = _quantize_checked(trial, trial8, classes, size, name, train, val, int8, metadata, progress)
            except SegnasError as exc:
                raise SegnasError(f"{out}: {exc}{kept}") from None
            say(check.describe())
            say(check.speed())
        try:
            os.replace(trial8 if quantized is not None else trial, out)
        except PermissionError as exc:  # (an immutable file, another user's in a sticky folder)
            raise SegnasError(f"--out {out}: cannot be replaced ({exc.strerror}); it is left as it was") from None
    finally:
        trial.unlink(missing_ok=True)
        trial8.unlink(missing_ok=True)
    return out, results
