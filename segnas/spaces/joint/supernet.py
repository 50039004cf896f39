"""SSR's supernet over the ``joint`` space: sigmoid-normalized architecture weights, channel masks,
and progressive shrinking of the solution space.

Every slot holds all candidates of ``JointSpace.candidates()`` (skip + block kind × dilation ×
resolution), each a ``FactorizedResidual`` built at full width with its own weights. Decisions
per slot: the candidate (``alpha_op``), and per block candidate its mid and out widths
(``alpha_mid``, ``alpha_out``). Weights are p = sigmoid(α) / Σ sigmoid(α) over the candidates
still *active* (SSR; not softmax). In the soft ("gumbel") mode a slot outputs Σ_k p_k·cand_k(x)
and each block runs under expected channel masks Σ_j q_j·[c < w_j]; blocks run on only the first
channels up to the widest active width, and inactive candidates are not computed at all, so the
supernet gets cheaper as ``shrink`` removes candidates. "argmax" runs the derived discrete network
on the shared weights; "max" / "min" / "random" fix the widths (pre-training's sandwich rule).

Resources: ``expected_latency(0, latency)`` is the differentiable expected latency from a latency
model's operator table (plus its call overhead); ``expected_cost(cost)`` the same expectation for
any per-operator cost (GFLOPs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.factorized import FactorizedResidual
from segnas.nn.ops import OpKey
from segnas.nn.segnet import pad_to_multiple, padded_size
from segnas.spaces.joint.arch import JointArch, Slot
from segnas.spaces.joint.network import (JointDecoder, block_template, decoder_pieces, down_piece, plan_network,
                                         stem_pieces)
from segnas.spaces.joint.space import JointSpace
from segnas.spaces.pieces import Piece

if TYPE_CHECKING:
    from segnas.cost.latency_model import LatencyModel

MODES = ("gumbel", "argmax", "max", "min", "random")


def normalized(alpha: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """SSR's weights: sigmoid(α) over the active candidates, normalized to sum 1 (last dim)."""
    s = torch.sigmoid(alpha) * active.to(alpha.dtype)
    return s / s.sum(-1, keepdim=True).clamp_min(1e-12)


def ssr_loss(p: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """−KL(U‖p) over the active candidates: (1/K)·Σ log p_i + log K. It is 0 with one candidate
    and at the uniform distribution and falls as p concentrates; minimizing it drives p to
    one-hot (SSR: equivalent to an L0 penalty on the architecture)."""
    k = active.sum(-1).clamp_min(1).to(p.dtype)
    logs = torch.where(active, torch.log(p.clamp_min(1e-12)), torch.zeros_like(p))
    return logs.sum(-1) / k + torch.log(k)


class JointSupernet(nn.Module):
    """SSR's supernet over a ``JointSpace`` (see the module docstring); one architecture."""

    num_archs = 1

    def __init__(self, space: JointSpace, num_classes: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.input_size = tuple(int(v) for v in input_size)
        self.candidates = space.candidates()
        self.width_choices = [space.widths(s) for s in range(len(space.channels))]
        if any(len(w) != len(self.width_choices[0]) for w in self.width_choices):
            raise SegnasError(f"joint supernet: width ratios {list(space.width_ratios)} round to different "
                              f"numbers of channel choices across stages {list(space.channels)}")
        self.reference = space.make_arch([[Slot("skip")] * n for n in space.slots])  # fixed parts
        self.stride_multiple = self.reference.stride
        self.stem = nn.Sequential(*(p.build() for p in stem_pieces(self.reference)))
        self.downs = nn.ModuleList(down_piece(self.reference, s).build() for s in range(1, len(space.channels)))
        self.decoder = JointDecoder(decoder_pieces(self.reference, num_classes), len(space.channels))
        self.slots = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(self._block(c, cand) for cand in self.candidates) for _ in range(n))
            for c, n in zip(space.channels, space.slots))
        k, w = len(self.candidates), len(self.width_choices[0])
        self.alphas = nn.ParameterDict()
        for s, n in enumerate(space.slots):
            for name, shape in ((f"op{s}", (n, k)), (f"mid{s}", (n, k, w)), (f"out{s}", (n, k, w))):
                self.alphas[name] = nn.Parameter(torch.zeros(*shape))
                self.register_buffer(f"active_{name}", torch.ones(*shape, dtype=torch.bool))
        self.width_mode = "gumbel"
        self._cost_cache: dict = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cost_cache"] = {}  # holds the cost functions (and their owners): not part of the network
        return state

    @staticmethod
    def _block(channels: int, cand) -> nn.Module:
        if cand.op == "skip":
            return nn.Identity()
        return FactorizedResidual(channels, channels, channels, cand.dilation, cand.half,
                                  depthwise=cand.op == "dwfact", slimmable=True)

    # ------------------------------------------------------------------ engine contract
    def arch_parameters(self, arch_index: int = 0) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        ids = {id(p) for p in self.alphas.values()}
        return (p for p in self.parameters() if id(p) not in ids)

    def set_width_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise SegnasError(f"joint supernet: unknown mode {mode!r} (expected {', '.join(MODES)})")
        self.width_mode = mode

    def active(self, name: str) -> torch.Tensor:
        return getattr(self, f"active_{name}")

    def probs(self, name: str) -> torch.Tensor:
        return normalized(self.alphas[name], self.active(name))

    # ------------------------------------------------------------------ forward
    def _width_masks(self, s: int, i: int, k: int) -> tuple[int, int, torch.Tensor | None, torch.Tensor | None]:
        """(mid, out) channels to run candidate k of slot (s, i) at, and the soft masks if any."""
        widths = self.width_choices[s]
        result = []
        for name in ("mid", "out"):
            act = self.active(f"{name}{s}")[i, k]
            idx = act.nonzero().flatten().tolist()
            mode = self.width_mode
            if mode == "gumbel":
                q = self.probs(f"{name}{s}")[i, k]
                top = widths[idx[0]]
                steps = (torch.arange(top, device=q.device).unsqueeze(0) <
                         torch.tensor(widths, device=q.device).unsqueeze(1)).to(q.dtype)  # (W, top)
                result.append((top, q @ steps))
                continue
            if mode == "argmax":
                j = int(torch.where(act, self.alphas[f"{name}{s}"][i, k], torch.tensor(-torch.inf)).argmax())
            elif mode == "max":
                j = idx[0]
            elif mode == "min":
                j = idx[-1]
            else:
                j = idx[int(torch.randint(len(idx), (1,)))]
            result.append((widths[j], None))
        (mid, mid_mask), (out, out_mask) = result
        return mid, out, mid_mask, out_mask

    def _slot(self, x: torch.Tensor, s: int, i: int) -> torch.Tensor:
        act = self.active(f"op{s}")[i]
        if self.width_mode == "argmax":
            ks = [int(torch.where(act, self.alphas[f"op{s}"][i], torch.tensor(-torch.inf)).argmax())]
            weights = [None]
        else:
            ks = act.nonzero().flatten().tolist()
            p = self.probs(f"op{s}")[i]
            weights = [p[k] for k in ks]
        out = 0
        for k, wk in zip(ks, weights):
            block = self.slots[s][i][k]
            if isinstance(block, FactorizedResidual):
                mid, width, mid_mask, out_mask = self._width_masks(s, i, k)
                block.set_widths(mid, width)
                y = block(x, mid_mask, out_mask)
            else:
                y = x
            out = y if wk is None else out + wk * y
        return out

    def forward(self, x: torch.Tensor, arch_index: int = 0) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.stem(pad_to_multiple(x, self.stride_multiple))
        feats = []
        for s in range(len(self.slots)):
            if s:
                x = self.downs[s - 1](x)
            for i in range(len(self.slots[s])):
                x = self._slot(x, s, i)
            feats.append(x)
        return self.decoder.out(self.decoder(feats))[..., :h, :w]

    # ------------------------------------------------------------------ SSR loss, cost
    def ssr_terms(self) -> dict[str, torch.Tensor]:
        """Mean SSR loss per decision group: operators (one per slot), mid and out widths (one per
        active block candidate)."""
        terms = {"ops": [], "mid": [], "out": []}
        for s in range(len(self.slots)):
            terms["ops"].append(ssr_loss(self.probs(f"op{s}"), self.active(f"op{s}")))
            blocks = self.active(f"op{s}").clone()
            blocks[:, 0] = False  # skip has no widths
            for name in ("mid", "out"):
                per = ssr_loss(self.probs(f"{name}{s}"), self.active(f"{name}{s}"))
                terms[name].append(per[blocks])
        return {k: torch.cat([t.flatten() for t in v]).mean() if sum(t.numel() for t in v) else
                self.alphas["op0"].sum() * 0 for k, v in terms.items()}

    def _padded(self) -> tuple[int, int]:
        return padded_size(self.input_size, self.stride_multiple)

    @staticmethod
    def _check(arch_index: int) -> None:
        if arch_index != 0:
            raise SegnasError(f"joint supernet: arch_index {arch_index} outside 0..0 (one architecture)")

    def _cost_keys(self) -> tuple[list[OpKey], list[list[OpKey]]]:
        """The operators of the fixed parts, and per stage those of every candidate block (candidate ×
        mid width × out width, skip excluded)."""
        ph, pw = self._padded()
        fixed = [p.key(ph, pw) for p in plan_network(self.reference, self.num_classes)]
        blocks = []
        for s, c in enumerate(self.space.channels):
            widths = self.width_choices[s]
            blocks.append([Piece("", block_template(c, cand.slot(m, o)), s + 2).key(ph, pw)
                           for cand in self.candidates[1:] for m in widths for o in widths])
        return fixed, blocks

    def latency_keys(self, arch_index: int = 0) -> list[OpKey]:
        """Every operator the expected latency looks up."""
        self._check(arch_index)
        fixed, blocks = self._cost_keys()
        return fixed + [k for ks in blocks for k in ks]

    def cost_tables(self, cost: Callable[[list[OpKey]], list[float]]) -> tuple[float, list[torch.Tensor]]:
        """(cost of the fixed parts, per stage a (candidates, mid, out) tensor of block costs); ``cost``
        maps OpKeys to values (latency ms from a table, or GFLOPs). Cached per ``cost`` (bound methods
        of one object compare equal, so ``obj.method`` hits the cache every time)."""
        key = cost
        if key not in self._cost_cache:
            fixed, blocks = self._cost_keys()
            values = cost(fixed + [k for ks in blocks for k in ks])
            fixed_cost = float(sum(values[:len(fixed)]))
            tables, pos = [], len(fixed)
            for s, ks in enumerate(blocks):
                w = len(self.width_choices[s])
                t = torch.tensor(values[pos:pos + len(ks)], dtype=torch.float32).view(-1, w, w)
                tables.append(torch.cat([torch.zeros(1, w, w), t]))  # skip costs nothing
                pos += len(ks)
            self._cost_cache[key] = (fixed_cost, tables)
        return self._cost_cache[key]

    def expected_cost(self, cost: Callable[[list[OpKey]], list[float]]) -> torch.Tensor:
        """Differentiable expected cost of the network under the current weights (``cost`` as in
        ``cost_tables``: e.g. GFLOPs of OpKeys for the FLOPs resource)."""
        fixed, tables = self.cost_tables(cost)
        device = self.alphas["op0"].device
        total = torch.tensor(fixed, device=device)
        for s, table in enumerate(tables):
            p = self.probs(f"op{s}")                                   # (n, K)
            qm, qo = self.probs(f"mid{s}"), self.probs(f"out{s}")      # (n, K, W)
            per_cand = torch.einsum("nka,kab,nkb->nk", qm, table.to(device), qo)  # (n, K)
            total = total + (p * per_cand).sum()
        return total

    def expected_latency(self, arch_index: int, latency: LatencyModel) -> torch.Tensor:
        """Differentiable expected latency (ms): the expected sum of the operators' table entries
        (``latency.op_latencies``, missing ones measured) plus one runtime call overhead."""
        self._check(arch_index)
        return self.expected_cost(latency.op_latencies) + latency.call_overhead()

    # ------------------------------------------------------------------ shrinking, derivation
    @torch.no_grad()
    def shrink(self, threshold: float) -> dict[str, int]:
        """Drop every candidate with p / max(p) <= threshold, hierarchically: a slot with several
        operators left prunes operators; a slot down to one block prunes that block's widths.
        The best candidate of a decision is never dropped. Returns how many were dropped."""
        dropped = {"ops": 0, "mid": 0, "out": 0}

        def prune(p: torch.Tensor, act: torch.Tensor) -> int:
            ratio = p / p.max()
            drop = act & (ratio <= threshold)
            drop[p.argmax()] = False
            act &= ~drop
            return int(drop.sum())

        for s in range(len(self.slots)):
            ops = self.active(f"op{s}")
            for i in range(ops.shape[0]):
                if int(ops[i].sum()) > 1:
                    dropped["ops"] += prune(self.probs(f"op{s}")[i], ops[i])
                else:
                    k = int(ops[i].nonzero()[0])
                    if k == 0:
                        continue
                    for name in ("mid", "out"):
                        dropped[name] += prune(self.probs(f"{name}{s}")[i, k], self.active(f"{name}{s}")[i, k])
        return dropped

    def remaining(self) -> dict[str, int]:
        """Active candidates left per group (operators over slots; widths over active blocks)."""
        out = {"ops": 0, "mid": 0, "out": 0}
        for s in range(len(self.slots)):
            ops = self.active(f"op{s}").clone()
            out["ops"] += int(ops.sum())
            ops[:, 0] = False
            for name in ("mid", "out"):
                out[name] += int(self.active(f"{name}{s}")[ops].sum())
        return out

    def is_single(self) -> bool:
        """True when every decision has one candidate left: the space is one network."""
        for s in range(len(self.slots)):
            ops = self.active(f"op{s}")
            if (ops.sum(-1) > 1).any():
                return False
            blocks = ops.clone()
            blocks[:, 0] = False
            for name in ("mid", "out"):
                if (self.active(f"{name}{s}")[blocks].sum(-1) > 1).any():
                    return False
        return True

    @torch.no_grad()
    def derive(self) -> JointArch:
        """The network of the highest-weighted active candidate of every decision."""
        stages = []
        for s in range(len(self.slots)):
            widths = self.width_choices[s]
            slots = []
            p = self.probs(f"op{s}")
            for i in range(p.shape[0]):
                k = int(p[i].argmax())
                mid = widths[int(self.probs(f"mid{s}")[i, k].argmax())]
                out = widths[int(self.probs(f"out{s}")[i, k].argmax())]
                slots.append(self.candidates[k].slot(mid, out))
            stages.append(slots)
        return self.space.make_arch(stages)

    @torch.no_grad()
    def select(self, arch: JointArch) -> None:
        """Make "argmax" mode run exactly ``arch`` on the shared weights (weight-sharing evaluation):
        its candidate and widths get the largest weight of every decision. Overwrites α: call it
        on a copy of a searching supernet. SegnasError if ``arch`` is not in the (shrunk) space."""
        if tuple(arch.channels) != tuple(self.space.channels) or [len(st) for st in arch.slots] != list(self.space.slots):
            raise SegnasError(f"joint supernet: architecture with channels {list(arch.channels)} and "
                              f"{[len(st) for st in arch.slots]} slots is not in this space")
        keys = [(c.op, c.dilation, c.half) for c in self.candidates]
        for s, slots in enumerate(arch.slots):
            widths = self.width_choices[s]
            for i, slot in enumerate(slots):
                key = ("skip", 1, False) if slot.op == "skip" else (slot.op, slot.dilation, slot.half)
                if key not in keys or (slot.op != "skip" and not {slot.mid, slot.out} <= set(widths)):
                    raise SegnasError(f"joint supernet: stage {s} slot {i} ({slot.to_dict()}) is not a choice here")
                k = keys.index(key)
                picks = [("op", (i,), k)]
                if slot.op != "skip":
                    picks += [("mid", (i, k), widths.index(slot.mid)), ("out", (i, k), widths.index(slot.out))]
                for name, where, j in picks:
                    if not bool(self.active(f"{name}{s}")[where][j]):
                        raise SegnasError(f"joint supernet: stage {s} slot {i} ({slot.to_dict()}) was shrunk away")
                    alpha = self.alphas[f"{name}{s}"][where]
                    alpha.fill_(-10.0)
                    alpha[j] = 10.0

    def derived_cost(self, arch: JointArch, cost: Callable[[list[OpKey]], list[float]]) -> float:
        return float(sum(cost(self.space.latency_keys(arch, self.num_classes, self.input_size))))
