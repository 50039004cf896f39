"""Official FasterSeg architectures: ``import_official`` reads the architectures released with the
official code (``arch_0.pt`` teacher, ``arch_1.pt`` student) and derives the network exactly as its
``train/model_seg.py`` + ``train/train.py`` do; ``official_branches`` is that derivation, which the
supernet (``segnas.spaces.multires.supernet``) reuses, quirks included."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from segnas.errors import SegnasError
from segnas.spaces.multires.arch import CELL_OPS, DEFAULT_WIDTH_RATIOS, Branch, MultiResArch

OFFICIAL_PRIMITIVES = CELL_OPS  # train/genotypes.py PRIMITIVES, same order
OFFICIAL_STEM_HEAD_WIDTH = {0: (1.0, 1.0), 1: (8 / 12, 8 / 12)}  # train/config_train.py, teacher / student
OFFICIAL_LATENCY_TARGET_MS = 8.3  # tools/utils/darts_utils.py objective_acc_lat


def official_objective(miou: float, latency: float, target: float = OFFICIAL_LATENCY_TARGET_MS,
                       w: float = -0.07) -> float:
    """``objective_acc_lat``: mIoU · (latency / target)^w."""
    return miou * math.pow(latency / target, w)


def official_pair(objective02: float, objective12: float) -> tuple[int, int]:
    """``train.py``'s choice of branch ends: 1/32 + 1/8 if its objective is strictly better, else
    1/32 + 1/16."""
    return (2, 0) if objective02 > objective12 else (2, 1)


def _official_path(betas: list, last: int, layers: int) -> list[int]:
    """``betas2path``: the scale path (input scale of each of ``layers`` cells) ending at ``last``.
    Kept as the official code has it: for ``last == 2`` the best β1[i]·β2[j] (1 <= i <= j − 2,
    j < layers − 4) strides after cells i + 1 and j + 2 (what those β rows choose); for ``last == 1``
    the best β1[r] (1 <= r <= layers − 4) strides after cell r, one cell earlier than its row means."""
    downs = [0] * layers
    if last == 1:
        downs[int(torch.argmax(betas[1][1:-1, 0])) + 1] = 1
    elif last == 2:
        best, best_ij = 0, (0, 1)
        for j in range(layers - 4):
            for i in range(1, j - 1):
                p = betas[1][i][0] * betas[2][j][0]
                if p > best:
                    best, best_ij = p, (i, j)
        downs[best_ij[0] + 1] = 1
        downs[best_ij[1] + 2] = 1
    path = [0]
    for d in downs[:-1]:
        path.append(path[-1] + d)
    return path


def _official_ops(alphas: list[torch.Tensor], path: list[int], widths: list, ignore_skip: bool):
    """``alphas2ops_path_width``: argmax operators; non-strided skips are removed (most skip-like
    first) while more than round(n/3) + 2·last cells remain and never all cells after a strided
    one; other skips fall back to their second-best operator. Edits α in place, like the official
    code (so later branch derivations see them)."""
    n = len(path)
    min_len = int(np.round(n / 3.0)) + 2 * path[-1]
    row = lambda i: alphas[path[i]][i - path[i]]  # noqa: E731  (a view: writes go to alphas)
    skip_prob = lambda i: torch.softmax(row(i), dim=-1)[0]  # noqa: E731
    candidates = []
    for i in range(n):
        if ignore_skip:
            row(i)[0] = -float("inf")
        if int(row(i).argmax()) == 0 and (i == n - 1 or path[i] == path[i + 1]):
            candidates.append((i, skip_prob(i)))
    positions = [i for i, _ in candidates]
    downs = [i for i in range(n - 1) if path[i] < path[i + 1]]
    if downs:
        bounds = downs + [n]
        for a, b in zip(bounds, bounds[1:]):
            all_skips = (a + 1 in positions and b - 1 in positions
                         and positions.index(b - 1) - positions.index(a + 1) == b - a - 2)
            if all_skips:
                best = (1.0, -1)
                for j in range(a + 1, b):
                    if skip_prob(j) <= best[0]:
                        best = (skip_prob(j), j)
                row(best[1])[0] = -float("inf")
    if len(candidates) > n - min_len:
        candidates = sorted(candidates, key=lambda c: c[1], reverse=True)[: n - min_len]
    removed = {i for i, _ in candidates}
    ops, kept = [], []
    for i in range(n):
        op = int(row(i).argmax())
        if op == 0:
            if i in removed:
                continue
            row(i)[0] = -float("inf")
            op = int(row(i).argmax())
        kept.append(i)
        ops.append(op)
    return ops, [path[i] for i in kept], [widths[i] for i in kept[:-1]]


def official_branches(alphas: Sequence[torch.Tensor], betas: Sequence[torch.Tensor | None],
                      ratios: Sequence[torch.Tensor], width_choices: Sequence[Any],
                      ignore_skip: bool) -> dict[int, Branch]:
    """The branch ending at each scale (0, 1, 2) that official FasterSeg derives from one searched
    architecture: ``alphas[s]`` (L − s, 5) operator logits, ``betas[1]`` (L − 2, 2) and ``betas[2]``
    (L − 3, 2) path logits (column 0: from the finer scale, 1: same scale; ``betas[0]`` unused),
    ``ratios[s]`` width logits ((L − 1, n), (L − 1, n), (L − 2, n)); a width is
    ``width_choices[argmax]`` (what ``Branch.widths`` then holds). Runs ``network_metas`` for
    last = 0, 1, 2 in the official order on copies, so its in-place edits of α (skips set to −inf)
    and β (softmaxed once more per branch) carry over between branches as they do there."""
    alphas = [a.detach().float().cpu().clone() for a in alphas]
    betas = [None] + [b.detach().float().cpu().clone() for b in betas[1:3]]
    ratios = [r.detach().float().cpu() for r in ratios]
    layers = alphas[0].shape[0]
    branches = {}
    for last in (0, 1, 2):
        betas[1] = torch.softmax(betas[1], dim=-1)
        betas[2] = torch.softmax(betas[2], dim=-1)
        path = _official_path(betas, last, layers)
        widths = [width_choices[int(ratios[path[i]][i - max(path[i], 1)].argmax())] for i in range(1, layers)]
        ops, path, widths = _official_ops(alphas, path, widths, ignore_skip)
        branches[last] = Branch(tuple(path), tuple(OFFICIAL_PRIMITIVES[o] for o in ops), tuple(widths))
    return branches


def derive_official(state: dict, idx: int | None = None, lasts: Sequence[int] | None = None,
                    base_width: int = 12, width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS,
                    stem_head_width: tuple[float, float] | None = None) -> MultiResArch:
    """The network that official FasterSeg's ``train.py`` builds from one searched architecture
    (``alpha_{idx}_s``, ``beta_{idx}_s``, ``ratio_{idx}_s`` tensors, ``mIoU02/12``, ``latency02/12``)."""
    if idx is None:
        found = sorted({int(k.split("_")[1]) for k in state if k.startswith("alpha_")})
        if len(found) != 1:
            raise SegnasError(f"official arch: expected alpha_<idx>_<scale> tensors of one network, "
                              f"found indices {found}")
        idx = found[0]
    names = ([f"alpha_{idx}_{s}" for s in range(3)] + [f"beta_{idx}_{s}" for s in (1, 2)]
             + [f"ratio_{idx}_{s}" for s in range(3)])
    for name in names:
        if name not in state:
            raise SegnasError(f"official arch: missing field {name!r}")
    alphas = [state[f"alpha_{idx}_{s}"] for s in range(3)]
    betas = [None] + [state[f"beta_{idx}_{s}"] for s in (1, 2)]
    ratios = [state[f"ratio_{idx}_{s}"] for s in range(3)]
    layers = alphas[0].shape[0]
    ignore_skip = idx == 0  # train.py: the teacher (arch 0) never keeps a skip
    width_ratios = tuple(float(r) for r in width_ratios)
    if ratios[0].shape[1] == 1:  # no width search: the teacher is at full width
        choices = [1.0] if ignore_skip else [4 / 12]
    else:
        choices = list(width_ratios)
        if ratios[0].shape[1] != len(choices):
            raise SegnasError(f"official arch: ratio tensors have {ratios[0].shape[1]} width choices, "
                              f"width_ratios has {len(choices)}")
    derived = official_branches(alphas, betas, ratios, choices, ignore_skip)
    if lasts is None:
        for name in ("mIoU02", "latency02", "mIoU12", "latency12"):
            if name not in state:
                raise SegnasError(f"official arch: missing field {name!r} (needed to choose the branch pair; "
                                  "or pass lasts)")
        obj02 = official_objective(float(state["mIoU02"]), float(state["latency02"]))
        obj12 = official_objective(float(state["mIoU12"]), float(state["latency12"]))
        lasts = official_pair(obj02, obj12)
    branches = []
    for last in lasts:
        b = derived[last]
        idxs = []
        for w in b.widths:
            match = [i for i, r in enumerate(width_ratios) if abs(r - w) < 1e-9]
            if not match:
                raise SegnasError(f"official arch: width ratio {w} is not in width_ratios {width_ratios}")
            idxs.append(match[0])
        branches.append(replace(b, widths=tuple(idxs)))
    stem_w, head_w = stem_head_width or OFFICIAL_STEM_HEAD_WIDTH.get(idx, (1.0, 1.0))
    return MultiResArch(tuple(branches), layers=layers, num_scales=3, base_width=base_width,
                        width_ratios=width_ratios, stem_width=float(stem_w), head_width=float(head_w))


def import_official(path: str | Path, **kwargs: Any) -> MultiResArch:
    """Read an official ``arch_<idx>.pt`` (0 = teacher, 1 = student) and derive its network."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: official FasterSeg architecture file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SegnasError(f"{path}: cannot read as a torch-pickled FasterSeg architecture ({exc})") from None
    if not isinstance(state, dict):
        raise SegnasError(f"{path}: expected a dict of alpha/beta/ratio tensors, got {type(state).__name__}")
    try:
        return derive_official(state, **kwargs)
    except SegnasError as exc:
        raise SegnasError(f"{path}: {exc}") from None

