"""`segnas` command line: parses arguments, loads settings, calls the jobs API, prints results.

User mistakes (SegnasError) are printed as one line on stderr with exit status 2, no traceback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from segnas.config.io import SIZE_TEXT, comparable_value, with_sets
from segnas.engine.distributed import env_rank
from segnas.errors import CannotWrite, SegnasError, SegnasWarning
from segnas.registry import qualified
from segnas.utils import NO_ROOM


def command_group(help: str, **options: Any) -> typer.Typer:
    """A command group whose help paragraphs flow with the terminal (markdown markup: a docstring's
    source line breaks do not show)."""
    return typer.Typer(rich_markup_mode="markdown", help=help, no_args_is_help=True, **options)


app = command_group("Neural architecture search for real-time semantic segmentation.", add_completion=False,
                    pretty_exceptions_enable=False)


class GoingOnConsole(Console):
    """A console whose reader may go (``| head``, a ``tee`` that died with its ssh session) while
    the job goes on, its lines going nowhere from then on (its run's log.txt keeps them): rich's
    own stopped the job with exit status 1 and no word."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())
        os.close(devnull)


console = GoingOnConsole()
err_console = GoingOnConsole(stderr=True)


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` of the command: segnas's own warnings (``SegnasWarning``) as one
    ``warning:`` line (no source line), also in the log.txt of the run the command holds; any other
    as Python shows it."""
    if not issubclass(category, SegnasWarning):
        return SHOW_WARNING(message, category, filename, lineno, file, line)
    err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True,
                      emoji=False)
    log_in_held_run(f"warning: {message}")


#: Python's way of showing warnings (for those that are not segnas's).
SHOW_WARNING = warnings.showwarning
warnings.showwarning = one_line_warning  # (set on import: a plugin's warning comes as the commands are built)


def rank_zero() -> bool:
    """Whether this process prints: any outside torchrun, rank 0 under it (read before its group starts)."""
    return env_rank() == 0


def user_errors(fn: Callable) -> Callable:
    """Turn SegnasError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SegnasError, OSError) as exc:
            if isinstance(exc, SegnasError):
                message = str(exc) + (room_to_continue() if isinstance(exc, CannotWrite) else "")
            elif exc.errno in NO_ROOM:  # a write outside atomic_write that found no room
                message = f"{exc.filename or 'a file'}: cannot be written: {NO_ROOM[exc.errno]}{room_to_continue()}"
            else:
                raise
            if first_to_say(message):
                err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True,
                                  emoji=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            line = interrupted_line()
            if rank_zero():  # (under torchrun every rank is interrupted: one says it)
                err_console.print(line, highlight=False, soft_wrap=True, markup=False, emoji=False)
            log_in_held_run(line)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None

    return wrapper


def room_to_continue() -> str:
    """What follows an error of a write that found no room: how to continue the run once there is."""
    from segnas.training.start import continue_command

    run, _ = run_to_continue()
    try:
        return f"; once there is room, continue with {continue_command(run)}" if run is not None else ""
    except SegnasError:  # (a run stopped before its config.yaml was written: nothing to continue)
        return ""


def first_to_say(message: str) -> bool:
    """Whether this process says an error ``message``: any outside torchrun; under it, the first of a
    node's processes to meet it (every rank checks the same settings: one line, not one a process;
    an error one rank alone meets, a file of its share of the data, is still said). The mark lies in
    torchrun's own temporary folder for this launch attempt."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file:
        return True
    digest = hashlib.sha256(message.encode("utf-8", "replace")).hexdigest()[:16]
    try:
        os.close(os.open(Path(error_file).parents[1] / f"segnas-said-{digest}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except (OSError, IndexError):  # (no mark can be made: say it)
        pass
    return True


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system ending a job at its time limit, ``kill``): stopped as Ctrl-C stops a
    command, saying how to continue; exit status 143."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def run_to_continue() -> tuple[Path | None, bool]:
    """The run an interrupted command continues (the first it opened: a search's, not its final
    training's; not one of segnas's cache, a teacher or an encoder trained once), and whether it
    held any run at all."""
    from segnas.engine.rundir import held_runs
    from segnas.utils import cache_dir

    cache, held = cache_dir().resolve(), held_runs()
    return next((p for p in held if cache not in p.parents), None), bool(held)


def log_in_held_run(line: str) -> None:
    """``line`` in the log of the run the command holds, the one an interrupted command continues
    (a batch job's output may be lost)."""
    run, _ = run_to_continue()
    if run is not None:
        logging.getLogger(f"segnas.run.{run}").info(line)


def interrupted_line() -> str:
    """What an interrupted command says: how to continue its run (``run_to_continue``), or, in a
    run of segnas's cache or none, to run the command again."""
    from segnas.training.start import continue_command

    run, held = run_to_continue()
    if run is None:
        return "interrupted" + ("; run the same command again to continue" if held else "")
    try:
        return f"interrupted; continue with {continue_command(run)}"
    except SegnasError:  # (a run stopped before its config.yaml was written: nothing to continue)
        return "interrupted"


def print_table(table: Table) -> None:
    """A table at its own width where the console is narrower (``COLUMNS=60``, a narrow window):
    numbers cut to "661…" told nothing."""
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    target = console if natural <= console.width else GoingOnConsole(width=natural)  # (print clamps to its own)
    target.print(table)


def echo(message: str) -> None:
    """Print a line as it is (brackets and colons are not markup or emoji codes); under torchrun only
    rank 0 prints (the others would repeat it)."""
    if rank_zero():
        console.print(message, highlight=False, soft_wrap=True, markup=False, emoji=False)


def parse_overrides(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``key.path=value`` pairs; values are parsed as YAML scalars (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not all(part.strip() for part in key.split(".")):
            raise SegnasError(f"{option}: expected key=value, got {item!r}")
        try:  # a size such as 0x64 stays text (YAML would read a hexadecimal number)
            parsed = value.strip() if SIZE_TEXT.fullmatch(value.strip()) else yaml.safe_load(value)
        except yaml.YAMLError:
            raise SegnasError(f"{option} {key}: cannot read the value {value!r} (YAML)") from None
        if key in out and comparable_value(out[key]) != comparable_value(parsed):
            raise SegnasError(f"{option} {key}: given twice, {out[key]!r} and {parsed!r}; give it once")
        out[key] = parsed
    return out


def use_threads(threads: int | None) -> None:
    """Limit torch to ``threads`` threads for this command (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _setting_default(cls: Any, path: str) -> Any:
    """The default of the setting at dotted ``path`` of the settings class ``cls`` (None: none)."""
    first, *rest = path.split(".")
    field = cls.model_fields.get(first)
    if field is None:
        return None
    value = field.default_factory() if field.default_factory else field.default
    for name in rest:
        value = getattr(value, name, None)
    return value


def _train_default(path: str) -> str:
    """The default of a training setting, for --help."""
    from segnas.config import TrainConfig

    return str(_setting_default(TrainConfig, path))


#: `segnas train` options -> the training settings they set.
TRAIN_FLAGS = {"model": "model.name", "arch": "model.arch", "data": "data.name", "data_root": "data.root",
               "size": "data.crop_size", "base_size": "data.base_size", "epochs": "epochs",
               "minutes": "time_budget_min", "steps": "max_steps", "batch_size": "data.batch_size", "lr": "optim.lr",
               "teacher": "loss.teacher", "bf16": "bf16", "threads": "threads", "device": "device", "seed": "seed",
               "out_dir": "out_dir", "sync_bn": "sync_bn"}


@app.command(no_args_is_help=True)
@user_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo network name (e.g. fast_scnn); or give "
                                        "--arch.", show_default=_train_default("model.name")),
    arch: Optional[Path] = typer.Option(None, help="Architecture file (arch.json) from a search; or give --model."),
    data: Optional[str] = typer.Option(None, help="Dataset: camvid, cityscapes, folder, synthetic.",
                                       show_default=_train_default("data.name")),
    data_root: Optional[str] = typer.Option(None, help="Dataset folder."),
    size: Optional[str] = typer.Option(None, help="Training crop HxW, e.g. 360x480.", show_default="whole images"),
    base_size: Optional[str] = typer.Option(None, help="Resize all images to HxW first.", show_default="native size"),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs (with --minutes or --steps: at most this many).",
                                         show_default="10; with --minutes or --steps: until the budget is spent"),
    minutes: Optional[float] = typer.Option(None, help="Training-time budget in minutes (> 0; 0 is refused).",
                                            show_default="no limit"),
    steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps (>= 1).",
                                        show_default="no limit"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size.", show_default=_train_default("data.batch_size")),
    lr: Optional[float] = typer.Option(None, help="Base learning rate.", show_default=_train_default("optim.lr")),
    teacher: Optional[Path] = typer.Option(None, help="Checkpoint of a teacher for distillation.",
                                           show_default="none"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="bf16 autocast.", show_default="--fp32"),
    threads: Optional[int] = typer.Option(None, help="Torch threads.",
                                          show_default="OMP_NUM_THREADS, else the cores this process may use"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N, or auto (a GPU when present).",
                                         show_default=_train_default("device")),
    seed: Optional[int] = typer.Option(None, help="Random seed.", show_default=_train_default("seed")),
    out_dir: Optional[str] = typer.Option(None, help="Parent folder of run directories.",
                                          show_default=_train_default("out_dir")),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn",
                                           help="Under torchrun: BatchNorm statistics over every process's batch.",
                                           show_default="--no-sync-bn"),
    recipe: Optional[str] = typer.Option(None, help="A named training recipe (optimizer, loss, schedule, "
                                         "augmentation) under your settings: cpu-short, or a .yaml file.",
                                         show_default="none: the plain defaults"),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this run directory; other options "
                                          "then change only where it computes (data root, device, threads; kept "
                                          "in its config.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Any setting as key.path=value (repeatable)."),
) -> None:
    """Train a zoo network or a searched architecture; writes a run directory.

    Without --epochs, a --minutes or --steps budget alone decides when training ends. Under
    `torchrun --nproc-per-node N -m segnas train ...` it trains data-parallel (--batch-size is the
    global batch)."""
    from segnas.api import job_settings
    from segnas.config import TrainConfig
    from segnas.jobs import train_job

    if model is not None and arch is not None:
        raise SegnasError(f"give either --model (a zoo network) or --arch (an architecture file), not both: "
                          f"got --model {model} and --arch {arch}")
    given = {"model": model, "arch": str(arch) if arch else None, "data": data, "data_root": data_root, "size": size,
             "base_size": base_size, "epochs": epochs, "minutes": minutes, "steps": steps, "batch_size": batch_size,
             "lr": lr, "teacher": str(teacher) if teacher else None, "bf16": bf16, "threads": threads,
             "device": device, "seed": seed, "out_dir": out_dir, "sync_bn": sync_bn}
    overrides = {TRAIN_FLAGS[k]: v for k, v in given.items() if v is not None}
    flags = {TRAIN_FLAGS[k]: "--" + k.replace("_", "-") for k, v in given.items() if v is not None}
    if model is not None:  # the option replaces a config file's architecture, and the other way round
        overrides["model.arch"], flags["model.arch"] = None, "--model"
    if arch is not None:
        overrides["model.name"], flags["model.name"] = None, "--arch"
    sets = parse_overrides(set_)
    overrides = with_sets(overrides, flags, sets)
    if resume is None:  # an error names the option, not the settings file
        flags.update({key: "" for key in sets})
    cfg = job_settings(TrainConfig, config, overrides, resume, flags, recipe)
    result = train_job(cfg, resume=resume, echo=echo, changes=overrides if resume else None)
    echo(f"{result.closing_line()}; run: {result.run_dir}")


def _checkpoint_base_size(value: str | None) -> Any:
    """``--base-size`` of eval and predict: HxW, 'native' (None), or unset: the checkpoint's own."""
    from segnas.jobs.evaluate import CHECKPOINT
    from segnas.utils import parse_size_or_native

    return CHECKPOINT if value is None else parse_size_or_native(value, "--base-size")


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt), or a training's or search's run folder (its "
                                      "trained best.pt)."),
    data: str = typer.Option(..., help="Dataset name."),
    data_root: Optional[str] = typer.Option(None, help="Dataset folder."),
    split: str = typer.Option("val", help="Split to score."),
    base_size: Optional[str] = typer.Option(None, help="Resize images to HxW first; 'native' keeps their size.",
                                            show_default="the checkpoint's data.base_size, else native"),
    raw: bool = typer.Option(False, "--raw", help="Score the raw weights instead of the EMA weights training "
                                                  "reported (when the checkpoint has both)."),
    label_size: bool = typer.Option(False, "--label-size", help="Score against the labels at their own size "
                                    "(the network's output resized to them, as published full-resolution results "
                                    "are) rather than labels resized to the evaluation size (as training scores)."),
    batch_size: int = typer.Option(4, help="Evaluation batch size."),
    data_option: list[str] = typer.Option([], "--data-option", help="A dataset option as key=value (repeatable), "
                                           "e.g. holdout=0006R0 for CamVid's held-out street; over those of "
                                           "its training on the same dataset."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads.", show_default="the machine's cores"),
) -> None:
    """Score a checkpoint on a dataset split and print the per-class table."""
    use_threads(threads)
    from segnas.jobs.evaluate import eval_job
    from segnas.report.format import pct
    from segnas.utils import atomic_write_text, check_output_file, json_safe

    if json_out:
        check_output_file(json_out, "--json")
    bs = _checkpoint_base_size(base_size)
    if batch_size < 1:
        raise SegnasError(f"--batch-size: must be >= 1, got {batch_size}")
    options = parse_overrides(data_option, "--data-option")
    metrics, names = eval_job(checkpoint, data, data_root, split, bs, batch_size, options=options, raw=raw, echo=echo,
                              label_size=label_size)
    echo(f"{checkpoint} on {data}/{split}:")  # (a table's title wraps a long path mid-word)
    table = Table()
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    table.add_column("acc %", justify="right")
    for name, iou, acc in zip(names, metrics.iou, metrics.acc):  # ("-": a class no pixel holds)
        table.add_row(name, pct(iou), pct(acc))
    print_table(table)
    echo(f"mIoU {100 * metrics.miou:.2f}%  pixel acc {100 * metrics.pixel_acc:.2f}%  "
         f"mean acc {100 * metrics.mean_acc:.2f}%  fwIoU {100 * metrics.fwiou:.2f}%")
    if json_out:
        atomic_write_text(json_out, json.dumps(json_safe({"classes": names, **metrics.to_dict()}), indent=2,
                                               allow_nan=False))


@app.command()
@user_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt), or a training's or search's run folder (its "
                                      "trained best.pt)."),
    inputs: Path = typer.Argument(..., help="An image, or a folder of images / video frames (subfolders too)."),
    out: Path = typer.Option(Path("predictions"), help="Output folder (a folder's subfolders mirrored in it)."),
    alpha: float = typer.Option(0.5, help="Overlay opacity, 0 (image only) to 1 (mask only)."),
    base_size: Optional[str] = typer.Option(None, help="Resize each image to HxW for the network (masks are "
                                                       "written at the image's size); 'native' keeps its size.",
                                            show_default="the checkpoint's data.base_size, else native"),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads.", show_default="the machine's cores"),
    skip_unreadable: bool = typer.Option(False, help="Leave out images that cannot be read (said), instead of "
                                                     "refusing the folder before writing anything."),
    ids: bool = typer.Option(False, "--ids", help="Masks as class ids: palette-mode PNGs in the classes' colours "
                                                  "(viewers show the colours; read as labels they are the ids)."),
) -> None:
    """Write colourized masks and overlays for images or video frames."""
    use_threads(threads)
    from segnas.jobs.evaluate import predict_job

    written = predict_job(checkpoint, inputs, out, alpha, base_size=_checkpoint_base_size(base_size), echo=echo,
                          skip_unreadable=skip_unreadable, ids=ids)
    echo(f"wrote {len(written)} mask{'s' if len(written) != 1 else ''} and "
         f"{'their overlays' if len(written) != 1 else 'its overlay'} to {out}")


@app.command()
@user_errors
def demo(
    steps: Optional[int] = typer.Option(None, help="Optimizer steps each network trains for.",
                                        show_default="120"),
    minutes: Optional[float] = typer.Option(None, help="CPU-minutes each network trains for, instead of --steps "
                                                       "(machine- and load-dependent)."),
    size: str = typer.Option("128x160", help="Synthetic image size HxW."),
    target_ms: Optional[float] = typer.Option(None, help="Latency target (ms, ONNX Runtime at --size).",
                                              show_default="what 30% of the space's networks meet here"),
    target_fps: Optional[float] = typer.Option(None, help="...or as frames per second."),
    out_dir: str = typer.Option("runs", help="Parent folder of run directories."),
    threads: Optional[int] = typer.Option(None, help="Torch threads."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """A small comparison on the embedded synthetic scenes, in a few minutes on 2 cores.

    SasWOT and random search for a latency target, their winners and Fast-SCNN trained briefly, the
    table and the Pareto plot."""
    from segnas.jobs.demo import demo_job
    from segnas.utils import parse_size

    summary, _ = demo_job(steps, minutes, parse_size(size, "--size"), out_dir, threads, seed, target_ms, echo=echo,
                          target_fps=target_fps)
    exit_if_rows_failed(summary)


@app.command(no_args_is_help=True)
@user_errors
def compare(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file (see docs/compare.md)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the comparison in this run directory; --set then "
                                          "changes only where it computes (data root, device, threads, executor; "
                                          "kept in its config.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Any setting as key.path=value (repeatable)."),
    status: Optional[Path] = typer.Option(None, help="Only show where the comparison in this run directory stands "
                                                     "(every job's state and scores, hours left; safe while it runs)."),
    device: Optional[str] = typer.Option(None, help="Where the searches and trainings still to run compute (cpu, "
                                                    "cuda, cuda:N, auto), also with --resume: the run's config.yaml "
                                                    "stays as it is and every training records its device.",
                                         show_default="the settings' device"),
    workers: Optional[int] = typer.Option(None, min=1, help="Jobs at a time, also with --resume.",
                                          show_default="the settings' workers"),
    latency: bool = typer.Option(True, "--latency/--no-latency",
                                 help="--no-latency stops once every job has ended, before the latency session: "
                                      "train on a GPU machine, then --resume on the deployment machine to measure."),
    measure_now: bool = typer.Option(False, "--measure-now",
                                     help="With --resume, once every search has ended: only the latency session, now, "
                                          "while the trainings run elsewhere or wait; the resume that writes the "
                                          "results reuses it."),
    rerun: list[str] = typer.Option([], "--rerun", help="With --resume: run this method's search and trainings (or "
                                                        "this zoo network's trainings) again, e.g. after a fix; "
                                                        "repeatable. Their earlier folders move to discarded/."),
    any_machine: bool = typer.Option(False, "--any-machine",
                                     help="Run the latency session on this machine even where the searches "
                                          "predicted latency for another (their target was met or missed there)."),
) -> None:
    """Compare search methods and zoo baselines for one latency target on your data.

    Every search, then every network trained with one recipe, budget and seeds, measured in one
    latency session (docs/compare.md)."""
    from segnas.api import job_settings
    from segnas.config.compare import CompareSettings
    from segnas.jobs.compare import compare_job, compare_status
    from segnas.report.compare_md import status_table

    if status is not None:
        others = [flag for flag, given in (("--config", config), ("--resume", resume), ("--set", set_),
                                           ("--device", device), ("--workers", workers), ("--no-latency", not latency),
                                           ("--measure-now", measure_now), ("--rerun", rerun),
                                           ("--any-machine", any_machine)) if given]
        if others:
            raise SegnasError(f"--status only shows where a comparison stands; it runs nothing: leave out {others[0]}")
        echo(status_table(compare_status(status)).rstrip())
        return
    overrides = parse_overrides(set_)
    execution = {k: v for k, v in (("device", device), ("workers", workers)) if v is not None}
    with_sets(execution, {"device": "--device", "workers": "--workers"}, overrides)  # (the options win in compare_job)
    flags = {key: "" for key in overrides} if resume is None else {}  # an error names --set's key, not the file
    cfg = job_settings(CompareSettings, config, overrides, resume, flags)
    summary = compare_job(cfg, resume, echo=echo, device=device, workers=workers, measure=latency,
                          measure_now=measure_now, any_machine=any_machine, rerun=rerun,
                          changes=overrides if resume else None)
    state = ("latency measured" if summary.get("latency_measured") else
             "done" if summary.get("measured", True) else "trained")
    echo(f"{state}: {summary['run_dir']}")
    exit_if_rows_failed(summary)


def exit_if_rows_failed(summary: dict[str, Any]) -> None:
    """Exit status 1 where a network of a finished comparison has no result (a script that goes on
    to publish the table learns it is incomplete); its row says why."""
    from segnas.jobs.compare import failed_rows

    failed = failed_rows(summary)
    if failed:
        err_console.print(f"{len(failed)} network{'s' * (len(failed) > 1)} without a result: {', '.join(failed)} "
                          f"(their rows say why; after a fix, segnas compare --resume {summary['run_dir']} --rerun "
                          "NAME runs one again)", highlight=False, soft_wrap=True, markup=False, emoji=False)
        raise typer.Exit(1)


@app.command()
@user_errors
def bench(
    model: list[str] = typer.Option(..., "--model", "-m",
                                    help="Zoo name, arch.json, checkpoint or exported .onnx (repeatable)."),
    size: Optional[str] = typer.Option(None, help="Input HxW.", show_default="a checkpoint's data.base_size, the "
                                       "size a found network was searched for, an ONNX file's, else 360x480"),
    backend: list[str] = typer.Option(["onnxruntime"], "--backend", "-b",
                                      help="eager, eager-cl, torchscript, onnxruntime, openvino (repeatable)."),
    threads: Optional[int] = typer.Option(None, help="Threads (default: all cores available)."),
    classes: Optional[int] = typer.Option(None, help="Class count of zoo names and arch files (a checkpoint's and "
                                                     "ONNX file's own are used).",
                                          show_default="the arch file's num_classes, else 19"),
    device: str = typer.Option("cpu", help="cpu, or cuda for eager/torchscript/onnxruntime on a GPU."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON."),
    int8: bool = typer.Option(False, "--int8", help="Also time each network as an int8 ONNX graph (ONNX Runtime; "
                                                    "calibrated on random inputs: latency only)."),
) -> None:
    """Params, GFLOPs, latency (median/IQR), FPS and fraction of the machine's matmul peak."""
    from segnas.jobs.bench import bench_job
    from segnas.utils import atomic_write_text, check_output_file, parse_size

    if json_out:
        check_output_file(json_out, "--json")
    rows = bench_job(model, parse_size(size, "--size") if size else None, backend, threads, classes, device,
                     echo=echo, int8=int8)
    sizes = sorted({r["size"] for r in rows})
    machine = rows[0]["machine"]
    precision = "fp32" if all(r["precision"] == "fp32" for r in rows) else "fp32 (int8: where a backend says so)"
    threads = rows[0]["threads"]
    echo(f"{sizes[0] + ', ' if len(sizes) == 1 else ''}{threads} thread{'s' * (threads != 1)} on {machine['cpu']} "
         f"({machine['cores']} cores), {precision}, fp32 matmul peak {rows[0]['peak_gflops_s']:.0f} GFLOP/s")
    print_bench(rows, each_size=len(sizes) > 1)
    if json_out:
        atomic_write_text(json_out, json.dumps(rows, indent=2))


def print_bench(rows: list[dict[str, Any]], each_size: bool = False) -> None:
    """Per network, its name (whole) on a line, its class count, params and GFLOPs (and input size,
    ``each_size``) on the next, then a table of its backends, so that long names fit an 80-column terminal."""
    from segnas.report.format import num

    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for name, group in by_model.items():
        r0 = group[0]
        where = f" ({r0['classes_from']})" if r0.get("classes_from") else ""
        console.print(f"[bold]{escape(name)}[/bold]", highlight=False, soft_wrap=True)
        at = f" at {r0['size']}" if each_size else ""
        echo(f"  {r0['classes']} classes{where}, {r0['params_m']:.2f} M params, {num(r0['gflops'], '.2f')} GFLOPs{at}")
        table = Table(box=None, padding=(0, 1, 0, 2))
        for col in ("backend", "median ms", "IQR ms", "FPS", "GFLOP/s", "% peak"):
            table.add_column(col, justify="left" if col == "backend" else "right", no_wrap=True)
        for r in group:
            peak = None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"]
            backend = r["backend"] if r.get("precision", "fp32") == "fp32" else f"{r['backend']} {r['precision']}"
            table.add_row(backend, f"{r['median_ms']:.2f}", f"{r['iqr_ms']:.2f}", f"{r['fps']:.1f}",
                          num(r["achieved_gflops_s"], ".1f"), num(peak, ".1f"))
        print_table(table)


@app.command()
@user_errors
def export(
    model: str = typer.Argument(..., help="Checkpoint (.pt) or a run folder holding one, arch.json, or a zoo name."),
    out: Path = typer.Option(..., help="Output file (.onnx or .pt for TorchScript)."),
    size: Optional[str] = typer.Option(None, help="Input HxW the file is exported and checked at (the only size "
                                                  "a static ONNX or TorchScript file takes).",
                                       show_default="a checkpoint's data.base_size, the "
                                       "size a found network was searched for, else 360x480"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    dynamic: bool = typer.Option(False, help="Symbolic batch/H/W (ONNX only); parity is checked at a second size."),
    classes: Optional[int] = typer.Option(None, help="Class count for zoo names and arch files (a checkpoint "
                                                     "keeps its own).",
                                          show_default="the arch file's num_classes, else 19"),
    tolerance: float = typer.Option(1e-3, help="Largest accepted |PyTorch − exported| difference."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads.", show_default="the machine's cores"),
    int8: bool = typer.Option(False, "--int8", help="Quantize the ONNX graph to int8 (ONNX Runtime, static), "
                                                    "calibrated on the training data and checked on its val split."),
    data: Optional[str] = typer.Option(None, help="--int8: dataset to calibrate on (train) and check on (val).",
                                       show_default="the checkpoint's"),
    data_root: Optional[str] = typer.Option(None, help="--int8: its folder."),
    data_option: list[str] = typer.Option([], help="--int8: a dataset option key=value (repeatable), over those "
                                                   "of its training."),
    calibration_images: Optional[int] = typer.Option(None, help="--int8: train images the activation ranges are "
                                                                "observed on.", show_default="64"),
    max_drop: Optional[float] = typer.Option(None, help="--int8: largest val mIoU loss (points) against the float "
                                                        "graph; more and the file is not written.",
                                             show_default="1.0"),
) -> None:
    """Export to ONNX or TorchScript and check parity with PyTorch (and an int8 graph's mIoU)."""
    use_threads(threads)
    from segnas.jobs.bench import export_job, int8_settings
    from segnas.utils import parse_size

    quantize = int8_settings(int8, data=data, root=data_root, options=parse_overrides(data_option, "--data-option"),
                             calibration_images=calibration_images, max_drop=max_drop)
    path, _ = export_job(model, out, parse_size(size, "--size") if size else None, fmt, dynamic, classes,
                         tolerance, echo=echo, int8=quantize)
    echo(f"wrote {path}")


@app.command(no_args_is_help=True)
@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="Run directory of `segnas train`, `segnas search` or `segnas compare`."),
    out: Optional[Path] = typer.Option(None, help="Where to write the HTML file.", show_default="RUN_DIR/report.html"),
    samples: int = typer.Option(3, help="Validation images shown with their predictions (0: none)."),
    latency: bool = typer.Option(True, "--latency/--no-latency",
                                 help="Per-operator latency from the latency table (missing entries are measured)."),
) -> None:
    """Write one self-contained HTML report of a run: settings, curves, architecture, predictions, latency."""
    from segnas.jobs.report import report_job

    report_job(run_dir, out, samples, latency, echo=echo)


search_app = command_group("Architecture search strategies.")
app.add_typer(search_app, name="search")


#: Options of every `segnas search METHOD`: flag -> (settings paths, type, help).
SEARCH_OPTIONS: dict[str, tuple[tuple[str, ...], type, str]] = {
    "data": (("data.name",), str, "Dataset: camvid, cityscapes, folder, synthetic."),
    "data-root": (("data.root",), str, "Dataset folder."),
    "size": (("data.crop_size", "latency.size"), str, "Deployment / training size HxW (latency is for this size)."),
    "search-size": (("search_size",), str, "Search on images resized to HxW (e.g. half size)."),
    "target-ms": (("latency.target_ms",), float, "Latency target of the found network (ms)."),
    "target-fps": (("latency.target_fps",), float, "...or as frames per second."),
    "backend": (("latency.backend",), str, "Runtime latency is measured and predicted on."),
    "threads": (("threads",), int, "Threads for training and latency (default: all cores available)."),
    "minutes": (("minutes",), float, "Search budget in minutes (wall clock; > 0, 0 is refused; default: no limit)."),
    "final-steps": (("final.steps",), int, "Train the found network for this many optimizer steps afterwards "
                                           "(default: 100 epochs; --set final.epochs=0: no training)."),
    "workers": (("workers",), int, "Candidate evaluations at once."),
    "executor": (("executor",), str, "Where evaluations run: inline, process or ray."),
    "ray-address": (("ray_address",), str, "Address of a running Ray cluster (or auto)."),
    "task-cpus": (("task_cpus",), float, "CPUs each evaluation reserves on Ray (also its torch threads)."),
    "task-gpus": (("task_gpus",), float, "GPUs each evaluation reserves on Ray (a fraction shares one)."),
    "task-retries": (("task_retries",), int, "Times an evaluation whose worker died is run again."),
    "sync-bn": (("sync_bn",), bool, "One-shot searches under torchrun: BatchNorm over every process's batch."),
    "device": (("device",), str, "cpu, cuda, cuda:N or auto, for supernets and final training."),
    "seed": (("seed",), int, "Random seed."),
    "out-dir": (("out_dir",), str, "Parent folder of run directories."),
}


def _search_command(method: str) -> Callable[..., None]:
    """`segnas search METHOD`: the shared options, the method's own flags, --config, --set, --resume."""
    import inspect

    from segnas.search.base import get_strategy

    cls = get_strategy(method)
    clash = sorted(set(cls.cli_options) & (set(SEARCH_OPTIONS) | {"config", "resume", "set"}))
    if clash:  # a method's flag would silently replace the shared option
        raise SegnasError(f"search method {method!r} ({qualified(cls)}): its flag --{clash[0]} is an option every "
                          "method shares; name it otherwise")
    flags = {name: (paths, kind, text) for name, (paths, kind, text) in SEARCH_OPTIONS.items()}
    flags.update({name: ((path,), kind, text) for name, (path, kind, text) in cls.cli_options.items()})
    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, "--config", "-c", help="YAML settings file."))]
    from segnas.jobs.search import settings_class

    def shown(paths: tuple[str, ...]) -> str | bool:
        default = _setting_default(settings_class(method), paths[0])
        return False if default is None or isinstance(default, (dict, list)) or default == "" else str(default)

    def declared(name: str, kind: type) -> str:
        return f"--{name}/--no-{name}" if kind is bool else f"--{name}"

    params += [inspect.Parameter(name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                 default=typer.Option(None, declared(name, kind), help=text, show_default=shown(paths)))
               for name, (paths, kind, text) in flags.items()]
    params += [inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                 default=typer.Option(None, help="Continue the search in this run directory; "
                                                      "other options then change only where it computes (data root, "
                                                      "device, threads, executor; kept in its config.yaml).")),
               inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                                 default=typer.Option([], "--set", help="Any setting as key.path=value (repeatable)."))]

    def command(**kwargs: Any) -> None:
        from segnas.api import job_settings
        from segnas.jobs.search import check_method_of_file, run_method, search_job, settings_class

        resume = kwargs["resume"]
        overrides = {} if resume is not None else {"method": method}  # a resumed run keeps its method
        given: dict[str, str] = {}
        for name, (paths, _, _) in flags.items():
            value = kwargs.get(name.replace("-", "_"))
            if value is not None:
                overrides.update({path: value for path in paths})
                given.update({path: f"--{name}" for path in paths})
        alone = {paths[0]: f"--{name}" for name, (paths, _, _) in flags.items() if len(paths) == 1}
        overrides = with_sets(overrides, alone, parse_overrides(kwargs["set_"]))
        if resume is not None:
            started = run_method(resume)
            if started != method:
                from segnas.registry import plugin_hint
                from segnas.search.base import STRATEGIES

                missing = "" if started in STRATEGIES.names() else f" (not a built-in method: {plugin_hint()})"
                raise SegnasError(f"{resume}: a {started} search run; continue it with "
                                  f"segnas search {started} --resume {resume}{missing}")
        else:
            check_method_of_file(kwargs["config"], method)
            given = {**{key: "" for key in overrides}, **given}  # an error names --set's key, not the file
        cfg = job_settings(settings_class(method), kwargs["config"], overrides, resume, given)
        summary = search_job(cfg, resume, echo=echo, changes=overrides if resume else None)
        echo(f"done: {summary['run_dir']}")

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = f"search_{method}"
    summary = (inspect.getmodule(cls).__doc__ or method).strip().split("\n\n")[0].replace("\n", " ")
    command.__doc__ = re.sub(r"``([^`]+)``", r"\1", summary)  # reST literals read as plain text in --help
    return command


def _register_search_commands() -> None:
    """`segnas search METHOD` for every registered method; a plugin's method whose command cannot be
    built is left out with a warning (every other command works)."""
    from segnas.search.base import list_strategies

    for method in list_strategies():
        try:
            command = _search_command(method)
        except Exception as exc:  # (a plugin's method: every other command must still work)
            why = str(exc) if isinstance(exc, SegnasError) else f"search method {method!r}: {type(exc).__name__}: {exc}"
            warnings.warn(f"{why}; `segnas search {method}` is left out", SegnasWarning, stacklevel=1)
            continue
        search_app.command(method)(user_errors(command))


_register_search_commands()


proxy_app = command_group("Zero-cost proxies: score untrained networks, discover new proxies.")
app.add_typer(proxy_app, name="proxy")


@proxy_app.command("score")
@user_errors
def proxy_score(
    models: list[str] = typer.Argument(..., help="Zoo names or arch.json files (untrained, seeded)."),
    proxy: list[str] = typer.Option(["synflow", "nwot"], "--proxy", "-p", help="Proxy name, saved .json, or rank aggregate: az_nas, rank_log(a,b,...), rank_mean(a,b,...) (repeatable)."),
    data: str = typer.Option("synthetic", help="Dataset name."),
    data_root: Optional[str] = typer.Option(None, help="Dataset folder."),
    images: Optional[int] = typer.Option(None, min=1, help="Images the proxies see.",
                                         show_default="a proxy file's own, else 8"),
    size: Optional[str] = typer.Option(None, help="Images are resized to HxW ('native': their own size).",
                                       show_default="a proxy file's own, else 128x160"),
    inits: Optional[int] = typer.Option(None, min=1, help="Average each score over this many weight "
                                        "initializations.", show_default="a proxy file's own, else 1"),
    seed: int = typer.Option(0),
    data_option: list[str] = typer.Option([], help="Dataset option key=value, as data.options (repeatable)."),
) -> None:
    """Score networks with zero-cost proxies (no training)."""
    from segnas.jobs.proxy import proxy_score_job

    for row in proxy_score_job(models, proxy, data, data_root, images=images, size=size, seed=seed, inits=inits,
                               data_options=parse_overrides(data_option, "--data-option")):
        echo(f"{row['model']}: " + ", ".join(f"{p} {row[p]:.5g} ({row[p + '_s']:.2f} s)" for p in proxy))


@proxy_app.command("discover")
@user_errors
def proxy_discover(
    groundtruth: list[Path] = typer.Argument(..., help="Ground-truth JSONL (benchmarks/groundtruth/proxy_groundtruth.py); "
                                             "several: training repeats, averaged per architecture."),
    out: Path = typer.Option(..., help="Where to save the discovered expression (.json)."),
    data: str = typer.Option("synthetic", help="Dataset name."),
    data_root: Optional[str] = typer.Option(None, help="Dataset folder."),
    images: int = typer.Option(8),
    size: str = typer.Option("128x160"),
    train_fraction: float = typer.Option(0.5, help="Share of architectures evolved on; the rest is held out."),
    population: int = typer.Option(64),
    generations: int = typer.Option(20),
    seed: int = typer.Option(0),
    cv_folds: int = typer.Option(0, help="Pick the size penalty (parsimony) by this many-fold cross-validation on "
                                         "the training split; 0 = none."),
    members: int = typer.Option(1, min=1, help="Evolve this many expressions (other seeds) and save their ensemble, "
                                               "averaged on each one's quantile scale."),
    inits: int = typer.Option(1, min=1, help="Measure every network at this many weight initializations; an "
                                             "expression's value is its mean over them (costs as many times more)."),
    extra_terminal: list[str] = typer.Option([], help="Let expressions also read GA (the activations' loss "
                                                      "gradients) or R (each layer's resolution); repeatable."),
    network_ops: bool = typer.Option(False, help="Let expressions combine whole-network values (sums or means over "
                                                 "layers) with arithmetic."),
    bag_fraction: float = typer.Option(1.0, min=0.0, max=1.0, help="With --members > 1, each member evolves on "
                                       "its own random share of the training networks (bagging)."),
    data_option: list[str] = typer.Option([], help="Dataset option key=value, as data.options (repeatable)."),
) -> None:
    """Evolve a proxy expression (DEAP genetic programming) maximizing Kendall τ with trained mIoU."""
    from segnas.jobs.proxy import proxy_discover_job

    s = proxy_discover_job([str(p) for p in groundtruth], out, data, data_root, images=images, size=size,
                           train_fraction=train_fraction, population=population, generations=generations,
                           seed=seed, cv_folds=cv_folds, members=members, inits=inits, extra_terminals=extra_terminal,
                           network_ops=network_ops, bag_fraction=bag_fraction,
                           data_options=parse_overrides(data_option, "--data-option"), echo=echo)
    held = s["held_out_tau"]
    echo(f"{s['expression']}\ntrain τ {s['train_tau']:.3f}, held-out τ "
         f"{'-' if held is None else format(held, '.3f')}; saved {s['out']}")
    if held is not None and held <= 0:
        echo(f"warning: held-out τ {held:.3f}: the expression ranks the networks it did not see no better than "
             "chance; evolve on more ground truth, or check the data the ground truth was trained on")


def main() -> int:
    """The ``segnas`` command: a usage mistake the parser finds (an option's value of the wrong
    type, an unknown option or command) is one line naming it, exit status 2, as user errors are.
    Under torchrun the rank's process ends as the command returns (``distributed.end_rank``)."""
    from segnas.engine import distributed

    code = _command()
    distributed.end_rank(code)
    return code


def _command() -> int:
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:
        from click.exceptions import NoArgsIsHelpError, UsageError

    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(prog_name="segnas", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a bare group or command: its help, as --help gives
        exc.show()
        return 0
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "segnas"
        if where == "segnas search" and exc.format_message().startswith("No such command"):
            from segnas.registry import plugin_hint

            exc.message = f"{exc.format_message().rstrip('.')}: not a built-in method ({plugin_hint()})"
        err_console.print(f"[red]error:[/red] {escape(exc.format_message())} (see {where} --help)", highlight=False,
                          soft_wrap=True, emoji=False)
        return 2
    except typer.Abort:
        err_console.print("interrupted")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
