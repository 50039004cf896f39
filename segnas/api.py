"""segnas from Python: the commands as functions, and a trained network that segments images.

Settings are given as the settings reference names them: dotted names, as ``--set`` takes them
(``{"model.name": "fast_scnn", "data.root": "my_data", "max_steps": 2700}``), or nested sections
(``{"data": {"name": "folder", "root": "my_data"}}``, merged with what lies beneath); a settings
file (``config``) and a training recipe (``recipe``) sit under them, as on the command line. Every
check of the command line runs before any work and raises ``SegnasError`` naming the bad setting.
``echo`` receives the lines the command would print (``echo=print`` shows them; None: silent); progress bars show on a terminal
(setting ``progress``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import multiprocessing
import numbers
import os
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from pydantic import BaseModel

from segnas.config.base import union_members
from segnas.config.io import build_config, load_config, merged, set_dotted, settings_model, with_sets
from segnas.config.recipes import load_recipe
from segnas.engine.device import exact_fp32
from segnas.engine.rng import kept_rng
from segnas.engine.rundir import RunDir, releasing_what_it_opens
from segnas.engine.trainer import TrainResult
from segnas.errors import SegnasError
from segnas.jobs.evaluate import CHECKPOINT, Segmenter
from segnas.metrics import SegMetrics
from segnas.progress import Echo
from segnas.training import check_resumable
from segnas.utils import home_folder

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])


def leaves_the_process_as_it_was(job: F) -> F:
    """A job called from Python puts back what it changes in the caller's process for its run:
    torch's thread count, the random generators (Python's, NumPy's, torch's CPU and CUDA ones), the
    TF32 switches (a job on a GPU turns TF32 off: ``exact_fp32``), and the run
    folders it locked and logs it opened (also when it fails: an exception's traceback, which a REPL
    keeps, would otherwise keep its run folder locked)."""

    hints = typing.get_type_hints(job)
    signature = inspect.signature(job)

    @functools.wraps(job)
    def call(*args: Any, **kwargs: Any) -> Any:
        refuse_in_a_starting_worker(job.__name__)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SegnasError(f"{job.__name__}: {exc}") from None
        for name, value in bound.arguments.items():
            check_argument(name, value, hints.get(name))
            if Path in union_members(hints.get(name)) and isinstance(value, (str, os.PathLike)):
                bound.arguments[name] = home_folder(value)
        check_echo(bound.arguments.get("echo"))
        threads = torch.get_num_threads()
        try:
            with releasing_what_it_opens(), kept_rng(), exact_fp32():
                return job(*bound.args, **bound.kwargs)
        finally:
            torch.set_num_threads(threads)

    return call  # type: ignore[return-value]


def refuse_in_a_starting_worker(name: str) -> None:
    """SegnasError when called while a spawned worker process imports the caller's script (a
    script that calls segnas outside ``if __name__ == "__main__":``): its job would run again in
    every worker of the pool, each starting workers of its own."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SegnasError(f"{name}: called while a worker process of a segnas job starts: it imports your script, "
                          "and the script calls segnas at its top level; put those calls under "
                          "if __name__ == \"__main__\": (workers run them again otherwise)")


#: Arguments of plain types: what one is called in an error, and whether a value is one (numpy's
#: numbers among numbers, a bool not among them).
_PLAIN: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("True or False", lambda v: isinstance(v, bool)),
    str: ("text", lambda v: isinstance(v, str)),
    Path: ("a path", lambda v: isinstance(v, os.PathLike)),
    int: ("a whole number", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    type(None): ("None", lambda v: v is None)}


def check_argument(name: str, value: Any, hint: Any) -> None:
    """SegnasError naming argument ``name`` when ``value`` is not of type ``hint``, for arguments of
    plain types (switches, names, paths, numbers; other arguments have checks of their own): a
    switch given ``"no"`` would be on, a settings mapping given as ``config`` a traceback."""
    members = union_members(hint)
    if not all(m in _PLAIN for m in members):
        return
    if not any(_PLAIN[m][1](value) for m in members):
        raise SegnasError(f"{name}: expected {' or '.join(_PLAIN[m][0] for m in members)}, got "
                          f"{type(value).__name__} {value!r:.60}")


def check_echo(echo: Any) -> None:
    """SegnasError unless ``echo`` is None or a function that takes a line of text."""
    if echo is None:
        return
    if not callable(echo):
        raise SegnasError(f"echo: a function that takes each line (such as print), or None; got {echo!r}")
    try:
        inspect.signature(echo).bind("line")
    except TypeError:
        raise SegnasError(f"echo: {echo!r} must take one argument, each line (as print does)") from None
    except ValueError:  # (a builtin without a signature: taken as it is)
        pass


#: How errors name the ``resume``, ``config`` and ``recipe`` arguments: the command line's options...
OPTION_NAMES = {"resume": "--resume", "config": "--config", "recipe": "--recipe"}
#: ... and this module's keyword arguments.
ARGUMENT_NAMES = {name: name for name in OPTION_NAMES}


def job_settings(cls: type[S], config: str | Path | None, values: Mapping[str, Any],
                 resume: str | Path | None = None, flags: Mapping[str, str] | None = None,
                 recipe: str | Path | None = None, source: str = "options",
                 names: Mapping[str, str] = OPTION_NAMES) -> S | None:
    """Settings of type ``cls``: ``values`` (dotted names or nested sections) over the settings file
    ``config`` (if given) over the training recipe ``recipe`` (if given). None when resuming: the
    run's own config.yaml holds its settings, and ``values`` may only change where it computes
    (``training.start.RESUMABLE``). ``flags`` (setting -> option) names the option that gave a bad
    value; ``source`` names where the values came from in an error, ``names`` the arguments above."""
    flags = dict(flags or {})
    if resume is not None:
        sources = [names["config"]] * (config is not None) + [names["recipe"]] * (recipe is not None)
        if values or sources:  # a wrong folder named before the settings a resume would not take
            RunDir.check_existing(resume)
        check_resumable(cls, values, resume, flags, names["resume"], sources)
        return None
    under = load_recipe(recipe) if recipe is not None else {}
    if config is not None:
        return load_config(cls, Path(config), dict(values), flags, under=under, new=True)
    raw: dict[str, Any] = merged(under, {})
    for key, value in values.items():
        set_dotted(raw, key, value)
    return build_config(cls, raw, source, flags, new=True)


def dotted(cls: type[BaseModel], settings: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``settings`` of the settings class ``cls`` by dotted names: its sections given as mappings
    flattened (``{"data": {"root": "d"}}`` is ``{"data.root": "d"}``), so that a section given in part
    keeps the rest of what lies beneath it (the recipe's, the settings file's). A setting whose value
    is a mapping (``data.options``, ``methods``) is a value: it replaces, as ``--set`` does."""
    if settings is not None and not isinstance(settings, Mapping):
        raise SegnasError(f"settings{' ' + prefix.rstrip('.') if prefix else ''}: expected a mapping of setting names "
                          f"to values, got {type(settings).__name__}")
    out: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        if not isinstance(key, str) or key != key.strip():
            raise SegnasError(f"settings: {prefix}{key!r}: setting names are text without spaces around them, such as "
                              "'optim.lr'")
        field = cls.model_fields.get(key) if "." not in key else None
        section = settings_model(field.annotation) if field is not None else None
        given = dotted(section, value, f"{prefix}{key}.") if section is not None and isinstance(value, Mapping) else \
            {f"{prefix}{key}": os.fspath(value) if isinstance(value, os.PathLike) else value}
        for name, v in given.items():
            if name in out and out[name] != v:
                raise SegnasError(f"settings: {name} given twice, dotted and nested ({out[name]!r} and {v!r}); give it once")
            out[name] = v
    whole = next(((a, b) for a in out for b in out if b.startswith(a + ".")), None)
    if whole:
        raise SegnasError(f"settings: {whole[0]} given whole and {whole[1]} in part; give one of them")
    return out


@leaves_the_process_as_it_was
def train(settings: Mapping[str, Any] | None = None, *, recipe: str | Path | None = None,
          config: str | Path | None = None, resume: str | Path | None = None, echo: Echo | None = None) -> TrainResult:
    """``segnas train``: trains a zoo network (``model.name``) or a found one (``model.arch``) and
    returns its ``TrainResult`` (``run_dir``, absolute; ``best_miou``, ``history``, ...)."""
    from segnas.config import TrainConfig
    from segnas.jobs import train_job

    values = dotted(TrainConfig, settings)
    if resume is None:  # a network given one way replaces one a settings file gives the other way (as --arch)
        if "model.arch" in values and "model.name" not in values:
            values["model.name"] = None
        if "model.name" in values and "model.arch" not in values:
            values["model.arch"] = None
    cfg = job_settings(TrainConfig, config, values, resume, recipe=recipe, source="settings", names=ARGUMENT_NAMES)
    result = train_job(cfg, resume=resume, echo=echo, changes=values if resume else None)
    return dataclasses.replace(result, run_dir=str(Path(result.run_dir).resolve()))


@leaves_the_process_as_it_was
def search(method: str | None = None, settings: Mapping[str, Any] | None = None, *,
           config: str | Path | None = None, resume: str | Path | None = None, echo: Echo | None = None) -> dict[str, Any]:
    """``segnas search METHOD``: searches, measures and trains the found network; returns the
    content of the run's ``search_result.json`` (its paths relative to the run directory) plus
    ``run_dir`` (absolute). The latency target is
    ``latency.target_ms``; the deployment size ``latency.size``, else ``data.crop_size``. With
    ``resume`` the method may be left out (the run names it)."""
    from segnas.jobs.search import check_method_of_file, run_method, search_job, settings_class

    if resume is not None:
        started = run_method(resume)
        if method not in (None, started):
            raise SegnasError(f"{resume}: a {started} search run; continue it with search({started!r}, resume=...)")
        method = started
    elif method is None:
        raise SegnasError("search: name the method (e.g. search('gas', {...})), or give resume=RUN_DIR")
    cls = settings_class(method)
    values = dotted(cls, settings)
    if "method" in values:
        raise SegnasError(f"settings: method: the method is search()'s first argument ({method!r}); leave it out")
    if resume is None:
        check_method_of_file(config, method)
    cfg = job_settings(cls, config, values if resume else {"method": method, **values}, resume,
                       source="settings", names=ARGUMENT_NAMES)
    return absolute_run_dir(search_job(cfg, resume, echo=echo, changes=values if resume else None))


@leaves_the_process_as_it_was
def compare(settings: Mapping[str, Any] | None = None, *, config: str | Path | None = None,
            resume: str | Path | None = None, echo: Echo | None = None, **options: Any) -> dict[str, Any]:
    """``segnas compare``: every method's search, every network trained alike, one latency session;
    returns the content of the run's ``compare.json`` (its paths relative to the run directory) plus
    ``run_dir`` (absolute; with ``measure=False``: where
    it stopped, before the latency session). ``options`` are ``compare_job``'s (``device``,
    ``workers``, ``measure``, ``measure_now``, ``rerun``, ``any_machine``)."""
    from segnas.config.compare import CompareSettings
    from segnas.jobs.compare import COMPARE_OPTIONS, compare_job

    unknown = sorted(set(options) - COMPARE_OPTIONS)
    if unknown:
        raise SegnasError(f"compare: unknown option {unknown[0]!r}; the options are "
                          f"{', '.join(sorted(COMPARE_OPTIONS))}")
    hints = typing.get_type_hints(compare_job)
    for name, value in options.items():
        check_argument(name, value, hints.get(name))
    if isinstance(options.get("rerun"), str):
        options["rerun"] = [options["rerun"]]
    values = dotted(CompareSettings, settings)
    execution = {k: v for k, v in options.items() if k in EXECUTION_SETTINGS and v is not None}
    with_sets(execution, {k: f"{k}={v!r}" for k, v in execution.items()}, values, given_as="settings")
    cfg = job_settings(CompareSettings, config, values, resume, source="settings", names=ARGUMENT_NAMES)
    return absolute_run_dir(compare_job(cfg, resume, echo=echo, changes=values if resume else None, **options))


def absolute_run_dir(summary: dict[str, Any]) -> dict[str, Any]:
    """A job's summary with its ``run_dir`` absolute (it is returned to a caller that may change
    folder); the paths inside it stay relative to the run directory, as in its files."""
    return {**summary, "run_dir": str(Path(summary["run_dir"]).resolve())}


#: ``compare``'s options that are also settings of the comparison (the option wins: the two must agree).
EXECUTION_SETTINGS = ("device", "workers")


@leaves_the_process_as_it_was
def load(trained: str | Path | TrainResult | Segmenter, *, base_size: tuple[int, int] | str | None = CHECKPOINT,
         bf16: bool = False, device: str = "cpu", raw: bool = False) -> Segmenter:
    """A trained network ready to segment images: ``load(x)(image)`` is the class-id mask at the
    image's size. ``trained``: a checkpoint (``.pt``), a training's run directory (its
    ``best.pt``; or what ``train`` returned), what ``load`` returned (its checkpoint, with the options
    given here) or a search's run directory (its found network's final
    training). ``base_size``: the size images are resized to for the network (the checkpoint's
    training size by default; None or "native": each image's own). ``bf16``: bf16 autocast where the
    CPU has it natively. ``device``: cpu, cuda, cuda:N or auto. ``raw``: the raw weights of a
    checkpoint that also holds their EMA or SWA average (a ``last.pt``)."""
    return Segmenter(trained_source(trained), base_size, bf16, device, raw)


def trained_source(trained: Any, argument: str = "trained") -> str | Path:
    """A trained network's checkpoint or run folder, given as a path or as what ``train`` or ``load``
    returned; SegnasError naming ``argument`` for anything else."""
    if isinstance(trained, TrainResult):
        return trained.run_dir
    if isinstance(trained, Segmenter):
        return trained.checkpoint
    if isinstance(trained, (str, Path)):
        return trained
    others = ", a zoo name or an arch file" if argument != "trained" else ""
    raise SegnasError(f"{argument}: expected a checkpoint, a run folder, what train() or load() returned{others}, "
                      f"got {type(trained).__name__}")


@leaves_the_process_as_it_was
def evaluate(trained: str | Path | TrainResult | Segmenter, data: str, root: str | Path | None = None,
             split: str = "val", *,
             options: Mapping[str, Any] | None = None, base_size: tuple[int, int] | str | None = CHECKPOINT,
             label_size: bool = False, raw: bool = False, echo: Echo | None = None) -> SegMetrics:
    """``segnas eval``: per-class IoU, mIoU, pixel and mean accuracy (``SegMetrics``) of a trained
    network (as ``load`` takes it, or what ``load`` returned: its checkpoint at its size, with its
    weights, on the CPU) on split ``split`` of dataset ``data`` (camvid, cityscapes, folder,
    synthetic) under ``root``; ``options`` as ``data.options``, over those of its training on the
    same dataset."""
    from segnas.jobs.evaluate import eval_job

    if isinstance(trained, Segmenter):
        base_size = ("native" if trained.size is None else trained.size) if base_size == CHECKPOINT else base_size
        trained, raw = trained.checkpoint, raw or trained.raw
    trained = trained_source(trained)
    if options is not None and not isinstance(options, Mapping):
        raise SegnasError(f"options: expected a mapping of dataset options (data.options), got "
                          f"{type(options).__name__}")
    return eval_job(trained, data, None if root is None else str(root), split, base_size,
                    options=dict(options or {}), raw=raw, echo=echo, progress=False, label_size=label_size)[0]


@leaves_the_process_as_it_was
def export(network: str | Path | TrainResult | Segmenter, out: str | Path, *,
           size: tuple[int, int] | str | None = None, fmt: str = "onnx", dynamic: bool = False,
           num_classes: int | None = None, tolerance: float = 1e-3, int8: bool = False, data: str | None = None,
           root: str | Path | None = None, options: Mapping[str, Any] | None = None,
           calibration_images: int | None = None, max_drop: float | None = None, echo: Echo | None = None) -> Path:
    """``segnas export``: ``network`` (a trained network as ``load`` takes it, what ``train`` or
    ``load`` returned, an arch file or a zoo name) written to ``out`` as ONNX or TorchScript
    (``fmt``), checked against PyTorch; returns ``out``. ``size``: (H, W) or "HxW" (None: the
    network's own, else 360x480, said through ``echo``). ``int8``: an ONNX graph quantized to int8,
    calibrated on ``calibration_images`` (64) images of the checkpoint's training data (or ``data``,
    ``root``, ``options``) and kept only within ``max_drop`` (1.0) val mIoU points of the float graph."""
    from segnas.jobs.bench import INT8_OPTIONS, export_job, int8_settings

    quantize = int8_settings(int8, {**{k: k for k in INT8_OPTIONS}, "int8": "int8=True"},
                             data=data, root=None if root is None else str(root), options=dict(options or {}),
                             calibration_images=calibration_images, max_drop=max_drop)
    return export_job(str(trained_source(network, "network")), out, size, fmt, dynamic, num_classes, tolerance,
                      progress=False, echo=echo, int8=quantize)[0]


@leaves_the_process_as_it_was
def bench(networks: typing.Sequence[str | Path | TrainResult | Segmenter], *,
          size: tuple[int, int] | str | None = None, backends: typing.Sequence[str] = ("onnxruntime",),
          threads: int | None = None, num_classes: int | None = None, device: str = "cpu", int8: bool = False,
          echo: Echo | None = None) -> list[dict[str, Any]]:
    """``segnas bench``: one row per network and backend (params, GFLOPs, median and IQR latency,
    FPS, fraction of the machine's matmul peak, precision, the machine). ``networks``: trained
    networks as ``export`` takes them, arch files, zoo names or exported ``.onnx`` files; ``size``:
    (H, W) or "HxW" (None: each network's own); ``backends``: eager, eager-cl, torchscript,
    onnxruntime, openvino; ``int8``: each network timed as an int8 ONNX graph too (latency only)."""
    from segnas.jobs.bench import bench_job

    if isinstance(networks, (str, Path, TrainResult, Segmenter)):
        networks = [networks]
    return bench_job([str(trained_source(n, "networks")) for n in networks], size, list(backends), threads,
                     num_classes, device, echo=echo, progress=False, int8=int8)


__all__ = ["train", "search", "compare", "load", "evaluate", "export", "bench", "Segmenter"]
