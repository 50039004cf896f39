"""Reading a run directory for a report, without changing anything in it: its kind (training, search,
comparison), settings, per-epoch metrics, evaluated candidates, summary files and architecture."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from segnas.config.io import parse_yaml
from segnas.engine.rundir import RunKind, run_kind
from segnas.errors import SegnasError
from segnas.spaces.base import arch_key
from segnas.utils import read_json, read_jsonl, read_text_file


@dataclass
class Candidate:
    """One evaluated candidate of an ask/tell search: its order, score and predicted latency."""

    index: int
    key: str
    score: float | None
    latency_ms: float | None
    arch: dict[str, Any] | None


@dataclass
class RunFiles:
    """What a run directory holds. ``finals``: the final-training runs of a search's networks."""

    path: Path
    kind: RunKind
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    search_result: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    arch: dict[str, Any] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    finals: dict[str, "RunFiles"] = field(default_factory=dict)
    #: the ``note:`` and ``warning:`` lines of the run's log.txt, each once, in order
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def target_ms(self) -> Any:
        """The latency target the run searched or compared for (its result's, else its settings'), if any."""
        return ((self.search_result or {}).get("target_ms") or (self.compare or {}).get("target_ms")
                or (self.config.get("latency") or {}).get("target_ms"))

    @property
    def found_key(self) -> str | None:
        """The canonical key of the found architecture (``arch.json``), to mark it among candidates."""
        return arch_key(self.arch["arch"]) if self.arch and isinstance(self.arch.get("arch"), dict) else None


def read_run(path: str | Path) -> RunFiles:
    """Read the run directory at ``path``; a folder that is not one is a one-line SegnasError."""
    path = Path(path)
    if path.is_file():
        raise SegnasError(f"{path}: is a file; give the run directory that holds it (e.g. runs/RUN)")
    if not path.is_dir():
        raise SegnasError(f"{path}: run directory not found")
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file() and not (path / "compare.json").is_file():
        raise SegnasError(f"{path}: not a run directory (no config.yaml)")
    text = read_text_file(cfg_path) if cfg_path.is_file() else ""
    config = parse_yaml(text, cfg_path) or {}
    if not isinstance(config, dict):
        raise SegnasError(f"{cfg_path}: expected a mapping of settings, got {type(config).__name__}")
    run = RunFiles(path, run_kind(path, config), config, text, read_jsonl(path / "metrics.jsonl"))
    run.notes = log_notes(path / "log.txt")
    arch = read_json(path / "arch.json", missing_ok=True)
    run.arch = arch if isinstance(arch, dict) and "space" in arch and "arch" in arch else None
    if run.kind == "search":
        run.search_result = read_json(path / "search_result.json", missing_ok=True)
        result = run.search_result
        if result is not None and not (isinstance(result, dict) and isinstance(result.get("networks", {}), dict)):
            raise SegnasError(f"{path / 'search_result.json'}: expected an object with a 'networks' mapping")
        run.candidates = read_candidates(path, run.search_result)
        run.finals = final_runs(path, run.search_result)
    elif run.kind == "comparison":
        if not (path / "compare.json").is_file():
            raise SegnasError(f"{path}: a comparison without its table yet (no compare.json: under way, or waiting "
                              f"for its latency session, `segnas compare --resume` on the deployment machine); "
                              f"`segnas compare --status {path}` shows its jobs")
        run.compare = read_json(path / "compare.json", missing_ok=True)
        if not isinstance(run.compare, dict) or not isinstance(run.compare.get("rows"), list):
            raise SegnasError(f"{path / 'compare.json'}: expected an object with a 'rows' list")
    return run


#: A log.txt line: its time stamp (``RunDir.log``), then the message.
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.*)$")
#: What opens a note or warning line of a log (``latency: warning: ...`` too).
NOTE_PREFIX = re.compile(r"^(\w+: )?(note|warning): ")


def log_notes(path: Path) -> list[str]:
    """The ``note:`` and ``warning:`` lines of a run's log.txt (``latency: warning: ...`` too), without
    their time stamps, each once."""
    if not path.is_file():
        return []
    lines = (_LOG_LINE.match(x) for x in path.read_text(errors="replace").splitlines())
    said = [m.group(1) for m in lines if m and NOTE_PREFIX.match(m.group(1))]
    return list(dict.fromkeys(said))


def read_candidates(path: Path, result: dict[str, Any] | None) -> list[Candidate]:
    """Candidates of an ask/tell search in evaluation order: scores from ``candidates.jsonl``,
    predicted latencies from ``search_state.json`` (else the record's own ``latency_ms``)."""
    records = {}
    for line in read_jsonl(path / "candidates.jsonl"):
        if "key" in line and isinstance(line.get("result"), dict):
            records[str(line["key"])] = line["result"]
    if not records:
        return []
    state = read_json(path / "search_state.json", missing_ok=True)
    scored = state.get("scored") if isinstance(state, dict) else None  # (a damaged state: the store's order)
    pairs = [p for p in scored if isinstance(p, (list, tuple)) and len(p) == 2] if isinstance(scored, list) else []
    order = [(str(k), lat) for k, lat in pairs if str(k) in records]
    if not order:  # no state file: the store's order, latencies from the records
        order = [(k, r.get("latency_ms")) for k, r in records.items()]
    out = []
    for i, (key, latency) in enumerate(order, 1):
        r = records[key]
        score = r.get("score")
        out.append(Candidate(i, key, float(score) if isinstance(score, (int, float)) else None,
                             float(latency) if isinstance(latency, (int, float)) else None,
                             r.get("arch") if isinstance(r.get("arch"), dict) else None))
    return out


def found_network(result: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The found network of a search's result (``search_result.json``): its name and record (its
    ``arch_file``, latencies and ``training``); None when the result names none."""
    for name, network in ((result or {}).get("networks") or {}).items():
        if (network or {}).get("role") == "found":
            return name, network
    return None


def training_folder(path: Path, recorded: str) -> Path | None:
    """The folder of a found network's final training that the search at ``path`` recorded:
    relative to the search's run directory (an earlier segnas recorded it relative to where the
    search was started, or absolute; a moved run is looked up under its ``train/``); None if gone."""
    for candidate in (path / recorded, path / "train" / Path(recorded).name, Path(recorded)):
        if (candidate / "config.yaml").is_file():
            return candidate
    return None


def final_runs(path: Path, result: dict[str, Any] | None) -> dict[str, RunFiles]:
    """The final-training run of each found network (by name) that exists: named in
    ``search_result.json`` (looked up under ``train/`` when the run was moved), else ``train/*``."""
    out: dict[str, RunFiles] = {}
    for name, net in ((result or {}).get("networks") or {}).items():
        training = net.get("training") if isinstance(net, dict) else None
        if not isinstance(training, dict) or not isinstance(training.get("run_dir"), str):
            continue
        folder = training_folder(path, training["run_dir"])
        if folder is not None:
            out[name] = read_run(folder)
    if not out and (path / "train").is_dir():
        for sub in sorted((path / "train").iterdir()):
            if (sub / "config.yaml").is_file():
                out[sub.name] = read_run(sub)
    return out
