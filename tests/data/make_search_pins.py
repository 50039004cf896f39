"""How ``tests/data/search_pins.json`` was made (at commit cafcd7d, before the search redesign).

The pins are the architectures that the three searches found on tiny synthetic settings with the
code of commit cafcd7d, so that ``tests/test_search_pins.py`` can prove that a later version of
the search code finds exactly the same networks:

* FasterSeg (``segnas.jobs.search.fasterseg_job``): teacher + student co-search, 1 pre-training
  and 2 search epochs, derivation, no final training (``final_epochs=0``);
* SSR (``segnas.jobs.search.ssr_job``): 1 pre-training and 3 search epochs with shrinking on a
  tiny joint space, no final training;
* SasWOT (``segnas.search.saswot.saswot_search``): training-free regularized evolution on a small
  ``multires`` space, 30 candidates, population 8, with the registered proxy ``nwot`` once with
  ``workers=1`` and once with ``workers=2`` (inline executor: the result depends on ``workers``,
  not on the executor), and with ``synflow`` and ``workers=1``.

Everything is deterministic: a fixed seed, one torch thread, and a *fake latency table* whose
entries are computed from each operator's FLOPs (1 ms per 10 MFLOPs, no call overhead; the
``FlopsTable`` of ``tests/test_fasterseg_search.py``) instead of timings measured on the machine,
which would make every latency-dependent decision (λ adaptation, derivation, the SSR resource
term, SasWOT's feasibility test) vary from run to run. At cafcd7d the jobs built their tables
through module-level factories, which were replaced; since the search redesign every search runs
through ``segnas.jobs.search.search_job``, which takes the latency model (over the FLOPs table) as
its ``latency`` argument, and the cafcd7d settings below are translated to today's search settings
(``one_shot_settings``, ``run_saswot``; FasterSeg's official width passes, added later, set off). The on-disk cache (``SEGNAS_CACHE``) points into the work
folder, so no table measured earlier on this machine is read.

Checked at cafcd7d (torch 2.13.0 CPU): two runs of this script wrote identical files; each search
also gave the same result after other searches in the same process, with the global RNGs seeded
elsewhere, under 1-4 torch threads, and (FasterSeg, SSR) with weight_lr·(1 ± 1e-6), i.e. the found
networks do not hang on floating-point rounding. Two traps met on the way: at FasterSeg's default
weight_lr these tiny runs are chaotic (see ``FASTERSEG_SETTINGS``), and an *empty* latency table
is falsy (``LatencyTable`` has ``__len__``), so ``saswot_search(table=...)`` silently replaced it by
a timed table until ``FlopsTable`` defined ``__bool__``.

Usage (from the repository root, with the package importable)::

    python tests/data/make_search_pins.py            # rewrite tests/data/search_pins.json
    python tests/data/make_search_pins.py --check    # rerun and compare with the pinned file

It runs in about half a minute on one CPU core. Rewriting the pins is only right when a change of
the found networks is intended; the point of the file is that a refactoring does not change them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

PINS_PATH = Path(__file__).with_name("search_pins.json")
#: The commit whose code produced the pinned values.
PINNED_AT = "cafcd7d"
SEED = 0

# ----------------------------------------------------------------------------------- settings
#: ``SearchConfig`` of the FasterSeg search (``out_dir`` is added at run time).
FASTERSEG_SETTINGS: dict[str, Any] = {
    "data": {"name": "synthetic", "options": {"size": [64, 96], "length": 8}, "crop_size": [64, 96],
             "batch_size": 2},
    "space": {"layers": 5, "base_width": 2, "width_ratios": [0.5, 1.0]},
    # With the FLOPs table the student derives at ~0.55 ms: above the band around 0.4 ms, so λ
    # doubles after each search epoch (the adaptation is part of what is pinned).
    "latency": {"target_ms": 0.4, "lam": 0.1, "backend": "eager", "threads": 1},
    # A small weight learning rate on purpose: at the default 0.02 these tiny runs (batches of 2)
    # are chaotic - changing weight_lr by one part in a million, or the number of torch threads,
    # gives other networks - so a pin would fail on any change of floating-point summation order
    # (another CPU, a harmless reordering). At 1e-3, with a faster α (0.05), the found networks
    # stayed the same under 1-4 threads and weight_lr·(1 ± 1e-6) at cafcd7d.
    "weight_lr": 1e-3, "arch_lr": 0.05,
    "pretrain_epochs": 1, "search_epochs": 2, "derive_val_images": 4, "threads": 1, "seed": SEED,
    "final_epochs": 0, "progress": False,
}

#: ``SSRConfig`` of the SSR search (``out_dir`` is added at run time).
SSR_SETTINGS: dict[str, Any] = {
    "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
             "batch_size": 2},
    "space": {"channels": [8, 16], "slots": [2, 2], "stem_channels": 4, "decoder_width": 8,
              "dilations": [1, 2], "width_ratios": [1.0, 0.5]},
    # resource "latency" (the default): the expected latency from the (FLOPs) table, target below
    # what the supernet starts at, so the resource term pushes towards cheaper candidates.
    "latency": {"target_ms": 0.08, "backend": "eager", "threads": 1},
    "resource": "latency",
    "pretrain_epochs": 1, "search_epochs": 3, "arch_lr": 0.3, "shrink_threshold": 0.6, "gap_val_images": 4,
    "arch_weight_decay": 1e-3, "threads": 1, "seed": SEED, "final_epochs": 0, "progress": False,
}

#: The ``multires`` space SasWOT searches (``MultiResSpace`` keyword arguments).
SASWOT_SPACE: dict[str, Any] = {"layers": 6, "base_width": 2, "width_ratios": [0.5, 0.75, 1.0]}
#: Keyword arguments of ``saswot_search`` (besides ``out_dir``, ``space``, ``table``, ``workers``).
SASWOT_SETTINGS: dict[str, Any] = {
    # about the median FLOPs-latency of the space's networks at 48x64: half the proposals are rejected
    "target_ms": 0.7, "latency_size": [48, 64], "proxy": "nwot",
    "data": "synthetic", "data_options": {"size": [48, 64], "length": 8}, "images": 4, "batch_size": 2,
    "score_size": [32, 48], "candidates": 30, "population": 8, "sample_size": 3, "seed": SEED,
    "proxy_seed": 0, "executor": "inline", "top_k": 5,
}
#: The SasWOT runs: (proxy, workers). ``nwot`` (the default proxy) scores the data batches; its
#: scores are log-determinants of integer bit-agreement counts, so on another CPU a ReLU whose input
#: is within rounding of 0 can flip a bit and move a score (the closest two scores of the workers=2
#: run differ by 2e-6, relative). ``synflow`` is smooth (float64, positive weights): its pin holds
#: up to rounding anywhere.
SASWOT_RUNS = (("nwot", 1), ("nwot", 2), ("synflow", 1))


# ----------------------------------------------------------------------------------- latency
def flops_table_class():
    """``FlopsTable``: a ``LatencyTable`` whose entries come from FLOPs (1 ms per 10 MFLOPs), no
    call overhead. Defined lazily so that importing this file imports nothing of segnas."""
    from segnas.cost import count_flops
    from segnas.cost.table import LatencyTable

    class FlopsTable(LatencyTable):
        def _measure(self, key) -> float:
            with torch.random.fork_rng():  # building the operator must not move the search's RNG
                return count_flops(key.build().eval(), key.input_shape).gflops * 100.0

        def call_overhead(self, shape) -> float:
            return 0.0

        def __bool__(self) -> bool:
            # LatencyTable has __len__, so an empty table is falsy, and saswot_search's
            # ``table or LatencyTable(...)`` (cafcd7d) would replace it by a timed one.
            return True

    return FlopsTable


def flops_table(path: Path):
    return flops_table_class()("eager", threads=1, path=path)


@contextlib.contextmanager
def deterministic_latency(workdir: Path) -> Iterator[Any]:
    """While active: ``SEGNAS_CACHE`` in ``workdir`` and one torch thread. Yields
    ``latency(size, target_ms)``: a latency model over a FLOPs table, for ``search_job(latency=)``
    (at cafcd7d the jobs' module-level table factories were replaced instead)."""
    from segnas.cost import LatencyModel

    workdir = Path(workdir)
    saved_env = os.environ.get("SEGNAS_CACHE")
    saved_threads = torch.get_num_threads()
    os.environ["SEGNAS_CACHE"] = str(workdir / "cache")
    torch.set_num_threads(1)
    try:
        yield lambda size, target_ms: LatencyModel(flops_table(workdir / "flops_table.json"), size, target_ms)
    finally:
        torch.set_num_threads(saved_threads)
        if saved_env is None:
            os.environ.pop("SEGNAS_CACHE", None)
        else:
            os.environ["SEGNAS_CACHE"] = saved_env


# ----------------------------------------------------------------------------------- searches
def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


COMMON = ("data", "threads", "seed", "progress")


def one_shot_settings(method: str, old: dict[str, Any], workdir: Path):
    """The search settings of today's API for the cafcd7d settings ``old`` of a one-shot job: the
    common part, ``final_epochs`` as ``final.epochs``, the latency target, the rest in the method's
    section (FasterSeg's λ moved from ``latency`` into it)."""
    from segnas.jobs.search import make_settings

    old = copy.deepcopy(old)
    latency = old.pop("latency")
    section = {k: v for k, v in old.items() if k not in COMMON and k != "final_epochs"}
    if "lam" in latency:
        section["lam"] = latency.pop("lam")
    if method == "fasterseg":  # cafcd7d's width passes: one random width in pre-training, none extra in the search
        section.update(pretrain_random_widths=1, search_extremes=False)
    return make_settings(method, {**{k: old[k] for k in COMMON}, "latency": latency,
                                  "final": {"epochs": old["final_epochs"]}, "out_dir": str(workdir / "runs"),
                                  method: section})


def run_one_shot(method: str, old: dict[str, Any], workdir: Path) -> Path:
    """Run a one-shot search on the cafcd7d settings ``old`` with the FLOPs latency; its run directory."""
    from segnas.jobs.search import search_job

    workdir = Path(workdir)
    with deterministic_latency(workdir) as latency:
        cfg = one_shot_settings(method, old, workdir)
        model = latency(cfg.deployment_size(), cfg.latency.target)
        run = Path(search_job(cfg, latency=model)["run_dir"])
    if not model.table.measured:
        raise RuntimeError(f"the {method} search did not use the FLOPs table it was given")
    return run


def run_fasterseg(workdir: Path) -> dict[str, Any]:
    """FasterSeg on ``FASTERSEG_SETTINGS``: the derived teacher and student, and per search epoch
    the λ used and the networks derived after it."""
    from segnas.spaces import read_arch_file

    run = run_one_shot("fasterseg", FASTERSEG_SETTINGS, workdir)
    out: dict[str, Any] = {}
    for name in ("teacher", "student"):
        data = read_arch_file(run / f"{name}.json")
        out[name] = data["arch"]
        out[f"{name}_predicted_latency_ms"] = data["predicted_latency_ms"]
    search = [r for r in _records(run) if r["phase"] == "search"]
    out["epochs"] = [{"lambda": r["lambda"],
                      **{name: read_arch_file(run / "archs" / f"{name}_epoch{r['epoch']:03d}.json")["arch"]
                         for name in ("teacher", "student")}} for r in search]
    return out


def run_ssr(workdir: Path) -> dict[str, Any]:
    """SSR on ``SSR_SETTINGS``: the derived network, whether the space shrank to it, and per search
    epoch the argmax network and the candidates left after shrinking."""
    from segnas.spaces import read_arch_file

    run = run_one_shot("ssr", SSR_SETTINGS, workdir)
    data = read_arch_file(run / "arch.json")
    search = [r for r in _records(run) if r["phase"] == "search"]
    return {"arch": data["arch"], "predicted_latency_ms": data["predicted_latency_ms"],
            "converged": data["converged"],
            "epochs": [{"arch": read_arch_file(run / "archs" / f"arch_epoch{r['epoch']:03d}.json")["arch"],
                        **{k: r[k] for k in ("active_ops", "active_mid", "active_out")}} for r in search]}


def run_saswot(workdir: Path, workers: int = 1, proxy: str | None = None) -> dict[str, Any]:
    """SasWOT on ``SASWOT_SETTINGS`` with ``workers`` (and ``proxy`` instead of the settings' one):
    the best network, its score and latency, the finalists and how many candidates were scored.

    At cafcd7d this called ``saswot_search(out_dir, space=, table=, workers=, **SASWOT_SETTINGS)``;
    now the same search runs as ``segnas search saswot`` (``search_job``) with the settings
    translated to the search settings and the FLOPs table passed as its latency model."""
    from segnas.jobs.search import make_settings, search_job

    workdir = Path(workdir)
    old = copy.deepcopy(SASWOT_SETTINGS)
    with deterministic_latency(workdir) as latency:
        model = latency(old["latency_size"], old["target_ms"])
        settings = make_settings("saswot", {
            "data": {"name": old["data"], "options": old["data_options"]}, "seed": old["seed"],
            "latency": {"target_ms": old["target_ms"], "size": old["latency_size"], "backend": "eager"},
            "workers": workers, "executor": old["executor"], "out_dir": str(workdir / "saswot"),
            "progress": False, "final": {"epochs": 0},
            "saswot": {"space": "multires", "space_options": SASWOT_SPACE,
                       "scoring": {"proxy": proxy or old["proxy"], "images": old["images"],
                                   "batch_size": old["batch_size"], "size": old["score_size"],
                                   "proxy_seed": old["proxy_seed"], "inits": 1},
                       "candidates": old["candidates"], "population": old["population"],
                       "sample_size": old["sample_size"], "top_k": old["top_k"], "final_inits": 0}})
        run = Path(search_job(settings, latency=model)["run_dir"])
    if not model.table.measured:
        raise RuntimeError("the search did not use the FLOPs table it was given: update run_saswot")
    details = json.loads((run / "search_result.json").read_text())["details"]
    best = details["top"][0]
    return {"best": best["arch"], "best_score": best["score"],
            "best_latency_ms": best["latency_ms"], "candidates_scored": details["candidates_scored"],
            "stopped": details["stopped"], "rejected": details["rejected_infeasible"],
            "duplicates": details["duplicates"],
            "top": [{"arch": t["arch"], "score": t["score"], "index": t["index"]} for t in details["top"]],
            "scores": [h["score"] for h in details["history"]]}


def saswot_run_name(proxy: str, workers: int) -> str:
    return f"{proxy},workers={workers}"


def make_pins(workdir: Path, echo=print) -> dict[str, Any]:
    """Run every pinned search in ``workdir``; the content of ``search_pins.json``."""
    workdir = Path(workdir)
    pins: dict[str, Any] = {"pinned_at": PINNED_AT, "torch": torch.__version__, "seed": SEED}
    t0 = time.perf_counter()
    pins["fasterseg"] = {"settings": FASTERSEG_SETTINGS, **run_fasterseg(workdir / "fasterseg")}
    echo(f"fasterseg: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    pins["ssr"] = {"settings": SSR_SETTINGS, **run_ssr(workdir / "ssr")}
    echo(f"ssr: {time.perf_counter() - t0:.1f} s")
    pins["saswot"] = {"space": SASWOT_SPACE, "settings": SASWOT_SETTINGS, "runs": {}}
    for proxy, w in SASWOT_RUNS:
        t0 = time.perf_counter()
        name = saswot_run_name(proxy, w)
        pins["saswot"]["runs"][name] = run_saswot(workdir / name, w, proxy)
        echo(f"saswot {name}: {time.perf_counter() - t0:.1f} s")
    return json.loads(json.dumps(pins))  # as read back from the file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PINS_PATH, help="where to write the pins")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pins = make_pins(Path(tmp), echo=lambda m: print(m, file=sys.stderr))
    text = json.dumps(pins, indent=1, sort_keys=True) + "\n"
    if args.check:
        pinned = json.loads(args.out.read_text())
        same = {k: v for k, v in pinned.items() if k != "torch"} == {k: v for k, v in pins.items() if k != "torch"}
        print(("identical" if args.out.read_text() == text else "same pins") if same else f"DIFFERENT from {args.out}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
