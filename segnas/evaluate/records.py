"""Ground-truth files: the JSONL records of trained networks, read, merged over training repeats
and checked for comparable budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.parallel import load_results
from segnas.parallel.store import read_store
from segnas.spaces.base import arch_key, resolve_space
from segnas.utils import atomic_write_text


def load_groundtruth(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ground-truth JSONL file (each ``evaluate_arch``'s result plus its ``key``),
    sorted by key, so that their order does not depend on the order parallel workers finished in."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: ground-truth file not found")
    records = [{"key": k, **v} for k, v in sorted(read_store(path)[0].items())]  # reads only: the file is the user's
    for r in records:
        check_record(r, path)
    return records


def check_record(record: dict[str, Any], path: Path) -> None:
    """Refuse, naming the file and the record's key, a ground-truth record whose network or score
    could not be used: found before any work rather than when that record's turn comes."""
    where = f"{path}, record {record['key']!r}"
    if not isinstance(record.get("space"), str) or not isinstance(record.get("arch"), dict):
        raise SegnasError(f"{where}: expected a 'space' name and an 'arch' mapping")
    try:
        resolve_space(record["space"]).arch_from_dict(record["arch"])
    except SegnasError as exc:
        raise SegnasError(f"{where}: {exc}") from None
    score = record.get("val_miou")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1):
        raise SegnasError(f"{where}: val_miou must be a number in [0, 1] (or null), got {score!r}")


def fill_latency(path: str | Path, latency_by_arch: dict[str, float], source: str) -> int:
    """Give the records of the ground-truth file ``path`` that have no ``latency_ms`` (networks trained
    on another machine without measuring it) their latency from ``latency_by_arch`` (``arch_key`` ->
    ms, predicted on the machine the latencies are for), with ``latency_source`` ``source``. Rewrites
    the file atomically, records in their order; returns how many were filled."""
    results = load_results(path)
    filled = 0
    for rec in results.values():
        k = arch_key(rec["arch"])
        if rec.get("latency_ms") is None and k in latency_by_arch:
            rec["latency_ms"], rec["latency_source"] = float(latency_by_arch[k]), source
            filled += 1
    if filled:
        atomic_write_text(path, "".join(json.dumps({"key": k, "result": r}) + "\n" for k, r in results.items()))
    return filled


def record_cpus(records: Sequence[dict[str, Any]]) -> set[str]:
    """The CPUs that ground-truth ``records`` under a CPU-minute budget were trained on (records
    older than the ``cpu`` field name none; a step budget means the same on any CPU)."""
    return {r["cpu"] for r in records if r.get("cpu") and r.get("minutes")}


def check_one_cpu(files: dict[str, Sequence[dict[str, Any]]], this_cpu: str | None = None) -> None:
    """Raise if the CPU-minute records of ``files`` (name -> records) were trained on more than one
    CPU, or on another one than ``this_cpu``: a CPU-minute budget buys different training on each."""
    cpus = {cpu: name for name, records in files.items() for cpu in record_cpus(records)}
    if this_cpu is not None and cpus and set(cpus) != {this_cpu}:
        other = sorted(set(cpus) - {this_cpu})
        raise SegnasError(f"{cpus[other[0]]}: trained on {', '.join(other)}, but this machine is {this_cpu}: a "
                          "CPU-minute budget buys different training here (use --steps, or another --data-dir)")
    if len(cpus) > 1:
        raise SegnasError(f"{', '.join(files)}: trained on different CPUs ({', '.join(sorted(cpus))}); a CPU-minute "
                          "budget buys different training on each, so the runs are not repeats")


def load_groundtruth_runs(paths: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """The records of the first ground-truth file, with ``val_miou`` the mean over every file that
    trained the same architecture (repeats with other training seeds) and ``val_miou_runs`` the
    single runs. Architectures missing from any file, or without a val mIoU in one, are left out."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise SegnasError("no ground-truth file given")
    files = [load_groundtruth(p) for p in paths]
    check_one_cpu(dict(zip(map(str, paths), files)))
    if len({r["bf16"] for records in files for r in records if "bf16" in r}) > 1:
        raise SegnasError(f"{', '.join(map(str, paths))}: some networks trained in bf16, others in fp32; "
                          "train them all in one precision")
    first = [r for r in files[0] if r.get("val_miou") is not None]
    by_arch = [{arch_key(r["arch"]): r["val_miou"] for r in records if r.get("val_miou") is not None}
               for records in files[1:]]
    out = []
    for r in first:
        k = arch_key(r["arch"])
        runs = [float(r["val_miou"])] + [m[k] for m in by_arch if k in m]
        if len(runs) == len(paths):
            out.append({**r, "val_miou": float(np.mean(runs)), "val_miou_runs": runs})
    if not out:
        raise SegnasError(f"{', '.join(map(str, paths))}: no architecture has a val_miou in every file")
    return out


def untrained_net(record: dict[str, Any], num_classes: int, seed: int = 0) -> Any:
    """The network of a ground-truth record (``space``, ``arch``), initialized from ``seed`` (the
    caller's RNG state is left as it was)."""
    import torch

    space = resolve_space(record["space"])
    arch = space.arch_from_dict(record["arch"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return space.build(arch, num_classes)
