"""FasterSeg's search-time network for the ``multires`` space: cells over three scales mixing the five
operators (α), the scale paths (β) and slimmable widths (γ), with teacher/student co-search.

Structure (official ``search/model_search.py``, ``Network_Multi_Path``): a stem to 1/8, then ``L``
layers; layer ``i`` has a cell at every scale ``j <= min(i, 2)`` (1/8, 1/16, 1/32). A cell has a
same-scale output and, except at 1/32 and in the last layer, a stride-2 output with twice the
channels; both mix the five ``CELL_OPS`` with the same ``softmax(α)`` row. A cell at a coarser
scale with two inputs (the same-scale previous output and the finer scale's stride-2 output) runs
on each of them and mixes the two results with ``softmax(β)``. Feature widths are chosen per node
(scale, layer) from ``width_ratios`` of 8·2^scale·``base_width`` with a straight-through hard
Gumbel-softmax over γ; every mixed op's output is multiplied by the one-hot value of its input
and output width samples (1 in value, the path of γ's gradient). The first layer reads the stem's
width and the last layer writes the head width of the architecture. Five heads read the three
last-layer features: ``"0"``, ``"1"``, ``"2"`` (1/8, 1/16 refined to 1/8, 1/32 refined to 1/8)
and ``"02"``, ``"12"`` (the pairs a derived network keeps).

Co-search: ``num_archs`` architecture-parameter sets (0 = teacher, 1 = student by default), each
with its own α/β/γ, stem and heads; the cells' weights are shared. Width-searching archs draw their
widths as ``set_width_mode`` says; the others (the teacher) always run at the widest ratio.

Parameter shapes for arch ``a`` (named as in the official checkpoints, ``arch_params.<name>``):
``alpha_a_0`` (L, 5), ``alpha_a_1`` (L−1, 5), ``alpha_a_2`` (L−2, 5) — row ``i − j`` is cell
(layer i, scale j); ``beta_a_1`` (L−2, 2), ``beta_a_2`` (L−3, 2) — row ``i − j − 1``, column 0 =
from the finer scale, 1 = same scale; ``ratio_a_0`` (L−1, n), ``ratio_a_1`` (L−1, n),
``ratio_a_2`` (L−2, n) — the width of the feature at scale ``s`` after layer ``i`` is row
``i − max(s − 1, 0)``; ``n = len(width_ratios)``, or 1 for archs that do not search widths.

Latency: ``expected_latency(arch_index, latency)`` composes entries of the latency model's operator
table (``segnas.cost.LatencyModel``; a ``LatencyTable`` itself is accepted too) for the plain
operators at the actual channel counts (``OpKey``s of the ``segnas.nn.ops`` registry, the same keys the derived
network's pieces have), so what the search minimizes is measured on the user's runtime at the
user's resolution. Unlike the official ``forward_latency``, the ``conv_2x_downup`` entry is looked
up under its own key (the official code looks it up under the ``conv_2x`` key: a known bug), the
per-path recurrence reads the previous layer's latencies and each scale's own β (the official loop
reads some values already updated for the current layer and, at 1/16, the β of 1/32), and widths
enter as expectations under ``softmax(γ)`` instead of one straight-through Gumbel sample.

Derivation reuses ``segnas.spaces.multires.official.official_branches`` (the code that also imports the
released official architectures), so its rules, quirks included, are the official ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.blocks import kaiming_init
from segnas.nn.ops import OPS, OpKey
from segnas.nn.segnet import pad_to_multiple, padded_size
from segnas.nn.slimmable import SlimmableLayers, SlimmableOp
from segnas.spaces.multires.arch import (ALIGN_CORNERS, CELL_OPS, DEFAULT_WIDTH_RATIOS, STEM_LEVELS, MultiResArch,
                                         feature_channels, stem_channels)
from segnas.spaces.multires.network import conv_key, head_key, stem_plan, upsample_key
from segnas.spaces.multires.official import (OFFICIAL_LATENCY_TARGET_MS, OFFICIAL_STEM_HEAD_WIDTH, official_branches,
                                             official_objective, official_pair)
from segnas.spaces.multires.space import MULTIRES, MultiResSpace

if TYPE_CHECKING:
    from segnas.cost.latency_model import LatencyModel
    from segnas.cost.table import LatencyTable

NUM_SCALES = 3
#: The five prediction heads, named by the scales they read (0 = 1/8, 1 = 1/16, 2 = 1/32).
HEADS: tuple[str, ...] = ("0", "1", "2", "02", "12")
#: ``forward``'s main output; the other heads are its auxiliary outputs in training.
MAIN_HEAD = "12"
WIDTH_MODES: tuple[str, ...] = ("max", "min", "random", "gumbel", "argmax")
ARCH_GROUPS: tuple[str, ...] = ("alpha", "beta", "gamma")
#: Official weights of LAT(α | β, γ fixed), LAT(β | α, γ fixed), LAT(γ | α, β fixed) (architect.py).
LATENCY_TERM_WEIGHTS: tuple[float, float, float] = (1 / 500, 497 / 500, 2 / 500)
#: Layers a supernet needs so that the official derivation finds a path to every scale.
MIN_LAYERS = 5
#: Branch ends of the two candidate networks, by the name of the head that predicts for them.
PAIRS: dict[str, tuple[int, int]] = {"02": (2, 0), "12": (2, 1)}


def _table_of(latency: LatencyModel | LatencyTable | Any) -> LatencyTable:
    """The operator table of a latency model (its ``.table``), or a ``LatencyTable`` given directly."""
    return latency.table if hasattr(latency, "table") else latency


class MixedOp(nn.Module):
    """The five cell operators, built slimmable from the ``segnas.nn.ops`` factories, mixed by weights."""

    def __init__(self, cin: int, cout: int, stride: int, out_ratios: Sequence[float]) -> None:
        super().__init__()
        kit = SlimmableLayers(out_ratios)
        self.ops = nn.ModuleList(SlimmableOp(OPS[name](cin, cout, stride=stride, layers=kit)) for name in CELL_OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, cin: int, cout: int) -> torch.Tensor:
        out = 0
        for k, op in enumerate(self.ops):
            op.set_channels(cin, cout)
            out = out + weights[k] * op(x)
        return out


class Cell(nn.Module):
    """Cell at ``scale``: a same-scale mixed op and (``down_ratios`` given) a stride-2 one."""

    def __init__(self, scale: int, base_width: int, out_ratios: Sequence[float],
                 down_ratios: Sequence[float] | None) -> None:
        super().__init__()
        c = feature_channels(base_width, scale, 1.0)
        self.keep = MixedOp(c, c, 1, out_ratios)
        self.down = MixedOp(c, feature_channels(base_width, scale + 1, 1.0), 2, down_ratios) if down_ratios else None


Width = tuple[int, "torch.Tensor | None"]  # (channels, straight-through score or None)


class MultiResSupernet(nn.Module):
    """FasterSeg's co-search supernet for the ``multires`` space (see the module docstring)."""

    def __init__(self, num_classes: int, input_size: tuple[int, int], layers: int = 16,
                 num_scales: int = NUM_SCALES, base_width: int = 12,
                 width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS, num_archs: int = 2,
                 stem_head_widths: Sequence[tuple[float, float]] | None = None,
                 width_search: Sequence[bool] | None = None) -> None:
        """``input_size`` (H, W) is the resolution latencies are composed for; ``stem_head_widths``
        per arch defaults to the official (1, 1) for the teacher and (8/12, 8/12) for students;
        ``width_search`` per arch defaults to False for arch 0 (the teacher) and True for the others."""
        super().__init__()
        self.num_classes = num_classes
        self.layers = layers
        self.num_scales = num_scales
        self.base_width = base_width
        self.width_ratios = tuple(float(r) for r in width_ratios)
        self.num_archs = num_archs
        self.input_size = tuple(int(v) for v in input_size)
        if stem_head_widths is None:
            stem_head_widths = [OFFICIAL_STEM_HEAD_WIDTH[0]] + [OFFICIAL_STEM_HEAD_WIDTH[1]] * (num_archs - 1)
        self.stem_head_widths = [(float(s), float(h)) for s, h in stem_head_widths]
        self.width_search = [bool(w) for w in width_search] if width_search is not None else (
            [False] + [True] * (num_archs - 1))
        self._validate()
        self.stride_multiple = 2 ** (STEM_LEVELS + NUM_SCALES - 1)
        self.width_mode = "gumbel"
        self._max_index = max(range(len(self.width_ratios)), key=lambda i: self.width_ratios[i])
        self._min_index = min(range(len(self.width_ratios)), key=lambda i: self.width_ratios[i])

        head_ratios = sorted({h for _, h in self.stem_head_widths})
        L = layers
        self.cells = nn.ModuleList()
        for i in range(L):
            last = i == L - 1
            self.cells.append(nn.ModuleList(
                Cell(j, base_width, head_ratios if last else self.width_ratios,
                     None if last or j == NUM_SCALES - 1 else self.width_ratios)
                for j in range(min(i, NUM_SCALES - 1) + 1)))
        self.stems = nn.ModuleList(
            nn.Sequential(*(p.build() for p in stem_plan(stem_channels(base_width, sw))))
            for sw, _ in self.stem_head_widths)
        self.heads = nn.ModuleList(self._build_heads(hw) for _, hw in self.stem_head_widths)
        self.arch_params = nn.ParameterDict()
        for a in range(num_archs):
            n = len(self.width_ratios) if self.width_search[a] else 1
            shapes = {f"alpha_{a}_0": (L, len(CELL_OPS)), f"alpha_{a}_1": (L - 1, len(CELL_OPS)),
                      f"alpha_{a}_2": (L - 2, len(CELL_OPS)), f"beta_{a}_1": (L - 2, 2), f"beta_{a}_2": (L - 3, 2),
                      f"ratio_{a}_0": (L - 1, n), f"ratio_{a}_1": (L - 1, n), f"ratio_{a}_2": (L - 2, n)}
            for name, shape in shapes.items():
                self.arch_params[name] = nn.Parameter(1e-3 * torch.ones(*shape))
        kaiming_init(self, mode="fan_in")  # official search: init_weight(kaiming_normal_, fan_in, relu)
        self._latency_cache: dict = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_latency_cache"] = {}  # holds latency tables: never copied or pickled with the model
        return state

    @classmethod
    def from_space(cls, space: MultiResSpace, num_classes: int, input_size: tuple[int, int],
                   **options: Any) -> MultiResSupernet:
        """The supernet of a ``MultiResSpace``'s settings (layers, scales, base width, width ratios)."""
        return cls(num_classes, input_size, layers=space.layers, num_scales=space.num_scales,
                   base_width=space.base_width, width_ratios=space.width_ratios, **options)

    def _validate(self) -> None:
        def fail(field: str, msg: str) -> None:
            raise SegnasError(f"multires supernet {field!r}: {msg}")

        if self.num_scales != NUM_SCALES:
            fail("num_scales", f"FasterSeg's supernet has {NUM_SCALES} scales (1/8, 1/16, 1/32), got {self.num_scales}")
        if self.layers < MIN_LAYERS:
            fail("layers", f"needs >= {MIN_LAYERS} layers for the derivation to reach 1/32, got {self.layers}")
        if self.num_archs < 1:
            fail("num_archs", f"must be >= 1, got {self.num_archs}")
        if not self.width_ratios or not all(0 < r <= 1 for r in self.width_ratios):
            fail("width_ratios", f"expected ratios in (0, 1], got {list(self.width_ratios)}")
        if len(self.stem_head_widths) != self.num_archs:
            fail("stem_head_widths", f"expected one (stem, head) pair per arch ({self.num_archs}), "
                                     f"got {len(self.stem_head_widths)}")
        if len(self.width_search) != self.num_archs:
            fail("width_search", f"expected one flag per arch ({self.num_archs}), got {len(self.width_search)}")
        for a, (sw, hw) in enumerate(self.stem_head_widths):
            if not (0 < sw <= 1 and 0 < hw <= 1):
                fail("stem_head_widths", f"arch {a}: widths must be in (0, 1], got ({sw}, {hw})")
        smallest = min(self.width_ratios + tuple(w for pair in self.stem_head_widths for w in pair))
        if self.base_width < 1 or feature_channels(self.base_width, 0, smallest) < 1:
            fail("base_width", f"{self.base_width} leaves no channels at width {smallest:.3f}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            fail("input_size", f"expected (H, W) > 0, got {self.input_size}")

    def _build_heads(self, head_width: float) -> nn.ModuleDict:
        c8, c16, c32 = (feature_channels(self.base_width, s, head_width) for s in range(NUM_SCALES))
        pieces = {
            "arm16": conv_key(c16, c8, 1), "refine16": conv_key(c8 + c8, c8, 3),
            "arm32": conv_key(c32, c16, 1), "refine32": conv_key(c16 + c16, c16, 3),
            "arm32_8": conv_key(c16, c8, 1), "refine32_8": conv_key(c8 + c8, c8, 3),
            "up": upsample_key(c8, 2),
            "head0": head_key(c8, self.num_classes), "head1": head_key(c8, self.num_classes),
            "head2": head_key(c8, self.num_classes), "head02": head_key(2 * c8, self.num_classes),
            "head12": head_key(2 * c8, self.num_classes),
        }
        return nn.ModuleDict({name: key.build() for name, key in pieces.items()})

    # ------------------------------------------------------------------ parameters
    def _check_arch(self, arch_index: int) -> None:
        if not 0 <= arch_index < self.num_archs:
            raise SegnasError(f"multires supernet: arch_index {arch_index} outside 0..{self.num_archs - 1}")

    def alphas(self, arch_index: int) -> list[nn.Parameter]:
        return [self.arch_params[f"alpha_{arch_index}_{s}"] for s in range(NUM_SCALES)]

    def betas(self, arch_index: int) -> list[nn.Parameter]:
        """β of scales 1 and 2 (scale 0 has one input)."""
        return [self.arch_params[f"beta_{arch_index}_{s}"] for s in (1, 2)]

    def gammas(self, arch_index: int) -> list[nn.Parameter]:
        return [self.arch_params[f"ratio_{arch_index}_{s}"] for s in range(NUM_SCALES)]

    def arch_parameters(self, arch_index: int) -> Iterator[nn.Parameter]:
        """α (3), β (2), γ (3) of one architecture, in the official order."""
        self._check_arch(arch_index)
        return iter(self.alphas(arch_index) + self.betas(arch_index) + self.gammas(arch_index))

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter but the architecture parameters: cells, stems, heads."""
        arch = {id(p) for p in self.arch_params.values()}
        return (p for p in self.parameters() if id(p) not in arch)

    def set_width_mode(self, mode: str) -> None:
        """How width-searching archs choose widths: ``"max"``, ``"min"``, ``"random"`` (uniform per
        node; the sandwich rule's max + min + random) or ``"gumbel"`` (search: hard Gumbel-softmax
        over γ with straight-through gradients) or ``"argmax"`` (γ's argmax, as derived). Archs without
        width search always use the max."""
        if mode not in WIDTH_MODES:
            raise SegnasError(f"multires supernet: unknown width mode {mode!r} (expected {', '.join(WIDTH_MODES)})")
        self.width_mode = mode

    # ------------------------------------------------------------------ widths
    def _sample_widths(self, arch_index: int) -> list[tuple[list[int], torch.Tensor | None]]:
        """Per scale, the width index of every node (row of γ) and its straight-through score."""
        out = []
        mode = self.width_mode if self.width_search[arch_index] else "max"
        for gamma in self.gammas(arch_index):
            rows = gamma.shape[0]
            if mode in ("max", "min"):
                out.append(([self._max_index if mode == "max" else self._min_index] * rows, None))
            elif mode == "random":
                out.append((torch.randint(len(self.width_ratios), (rows,)).tolist(), None))
            elif mode == "argmax":  # the widths derivation picks: score the network it would derive
                out.append((gamma.argmax(-1).tolist(), None))
            else:
                y = F.gumbel_softmax(F.log_softmax(gamma, dim=-1), tau=1.0, hard=True)
                idx = y.argmax(dim=-1)
                out.append((idx.tolist(), y.gather(1, idx[:, None])[:, 0]))
        return out

    def _node(self, samples, scale: int, layer: int) -> Width:
        """Channels and score of the feature at ``scale`` after ``layer``."""
        idx, scores = samples[scale]
        row = layer - max(scale - 1, 0)
        return (feature_channels(self.base_width, scale, self.width_ratios[idx[row]]),
                None if scores is None else scores[row])

    def _cell_widths(self, arch_index: int, samples, i: int, j: int) -> tuple[Width, Width, Width | None]:
        stem_w, head_w = self.stem_head_widths[arch_index]
        cin = (feature_channels(self.base_width, 0, stem_w), None) if i == 0 else self._node(samples, j, i - 1)
        last = i == self.layers - 1
        cout = (feature_channels(self.base_width, j, head_w), None) if last else self._node(samples, j, i)
        down = None if last or j == NUM_SCALES - 1 else self._node(samples, j + 1, i)
        return cin, cout, down

    # ------------------------------------------------------------------ forward
    def _trunk(self, x: torch.Tensor, arch_index: int) -> list[torch.Tensor]:
        """The last layer's output at each scale (head width)."""
        alphas = [F.softmax(a, dim=-1) for a in self.alphas(arch_index)]
        betas = [None] + [F.softmax(b, dim=-1) for b in self.betas(arch_index)]
        samples = self._sample_widths(arch_index)
        outs: dict[int, torch.Tensor] = {0: self.stems[arch_index](x)}
        downs: dict[int, torch.Tensor] = {}
        for i, cells in enumerate(self.cells):
            new_outs, new_downs = {}, {}
            for j, cell in enumerate(cells):
                (cin, s_in), (cout, s_out), down = self._cell_widths(arch_index, samples, i, j)
                if j == 0:
                    inputs = [(None, outs[0])]
                elif i == j:
                    inputs = [(None, downs[j - 1])]
                else:
                    beta = betas[j][i - j - 1]
                    inputs = [(beta[0], downs[j - 1]), (beta[1], outs[j])]
                alpha = alphas[j][i - j]
                new_outs[j] = _mix(inputs, lambda t: cell.keep(t, alpha, cin, cout), s_in, s_out)
                if down is not None:
                    new_downs[j] = _mix(inputs, lambda t: cell.down(t, alpha, cin, down[0]), s_in, down[1])
            outs, downs = new_outs, new_downs
        return [outs[s] for s in range(NUM_SCALES)]

    def forward_all(self, x: torch.Tensor, arch_index: int = 0) -> dict[str, torch.Tensor]:
        """Logits of all five heads (``HEADS``) at the input resolution (any H, W)."""
        self._check_arch(arch_index)
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.stride_multiple)
        f0, f1, f2 = self._trunk(padded, arch_index)
        m = self.heads[arch_index]
        o1 = m["refine16"](torch.cat([m["up"](m["arm16"](f1)), f0], dim=1))
        o2 = m["refine32"](torch.cat([m["up"](m["arm32"](f2)), f1], dim=1))
        o2 = m["refine32_8"](torch.cat([m["up"](m["arm32_8"](o2)), f0], dim=1))
        preds = {"0": m["head0"](f0), "1": m["head1"](o1), "2": m["head2"](o2),
                 "02": m["head02"](torch.cat([f0, o2], dim=1)), "12": m["head12"](torch.cat([o1, o2], dim=1))}
        size = padded.shape[-2:]
        return {k: F.interpolate(v, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)[..., :h, :w]
                for k, v in preds.items()}

    def forward(self, x: torch.Tensor, arch_index: int = 0) -> torch.Tensor | dict[str, Any]:
        """Main logits (head ``"12"``) in eval mode; ``{"out": main, "aux": [heads 0, 1, 2, 02]}`` in
        training (the official search loss sums CE over all five: use aux weight 1)."""
        preds = self.forward_all(x, arch_index)
        if not self.training:
            return preds[MAIN_HEAD]
        return {"out": preds[MAIN_HEAD], "aux": [preds[k] for k in HEADS if k != MAIN_HEAD]}

    # ------------------------------------------------------------------ latency
    def _padded_size(self) -> tuple[int, int]:
        return padded_size(self.input_size, self.stride_multiple)

    def _latency_grids(self, arch_index: int, free_widths: bool):
        """The stem's keys and, per cell output (layer i, scale j, 'keep'/'down'), the ``OpKey`` grid
        [op][input width][output width] over the widths the nodes can take."""
        ph, pw = self._padded_size()
        stem_w, head_w = self.stem_head_widths[arch_index]
        stem_keys = [p.key(ph, pw) for p in stem_plan(stem_channels(self.base_width, stem_w))]
        free = free_widths and self.width_search[arch_index]
        ratios = self.width_ratios if free else (self.width_ratios[self._max_index],)

        def node_counts(scale: int, layer: int, edge: str) -> list[int]:
            if edge == "in" and layer < 0:
                return [feature_channels(self.base_width, 0, stem_w)]
            if edge == "out" and layer == self.layers - 1:
                return [feature_channels(self.base_width, scale, head_w)]
            return [feature_channels(self.base_width, scale, r) for r in ratios]

        grids = []
        for i, cells in enumerate(self.cells):
            for j, cell in enumerate(cells):
                h, w = ph >> (STEM_LEVELS + j), pw >> (STEM_LEVELS + j)
                cins = node_counts(j, i - 1, "in")
                outs = [("keep", 1, node_counts(j, i, "out"))]
                if cell.down is not None:
                    outs.append(("down", 2, node_counts(j + 1, i, "out")))
                for kind, stride, couts in outs:
                    grid = [[[OpKey(op, ci, co, h, w, stride) for co in couts] for ci in cins] for op in CELL_OPS]
                    grids.append((i, j, kind, grid))
        return stem_keys, grids

    def latency_keys(self, arch_index: int) -> list[OpKey]:
        """Every ``OpKey`` that ``expected_latency`` and ``latency_terms`` of this arch look up, so a
        caller can ``table.ensure`` them up front (stems and cell operators; heads are not part of
        the expected latency, as in the official code)."""
        self._check_arch(arch_index)
        stem_keys, grids = self._latency_grids(arch_index, True)
        keys = list(stem_keys)
        for *_, grid in grids:
            keys += [k for per_op in grid for row in per_op for k in row]
        return list(dict.fromkeys(keys))

    def _latency_tables(self, arch_index: int, latency, free_widths: bool, device: torch.device):
        """(stem ms, {(i, j, kind): tensor [op, in width, out width] of ms}), cached per table."""
        table = _table_of(latency)
        key = (id(table), arch_index, free_widths, str(device))
        cached = self._latency_cache.get(key)
        if cached is not None and cached[0] is table:
            return cached[1]
        stem_keys, grids = self._latency_grids(arch_index, free_widths)
        table.ensure(stem_keys + [k for *_, g in grids for per_op in g for row in per_op for k in row], progress=False)
        stem_ms = sum(table.lookup(k, save=False) for k in stem_keys)
        mats = {(i, j, kind): torch.tensor([[[table.lookup(k, save=False) for k in row] for row in per_op]
                                            for per_op in grid], dtype=torch.float32, device=device)
                for i, j, kind, grid in grids}
        self._latency_cache[key] = (table, (stem_ms, mats))
        return stem_ms, mats

    def expected_latency(self, arch_index: int, latency: LatencyModel | LatencyTable,
                         fix: Iterable[str] | None = None) -> torch.Tensor:
        """Differentiable expected latency (ms) of arch ``arch_index`` from the operator table of
        ``latency`` (a ``segnas.cost.LatencyModel``, or a ``LatencyTable``; entries missing from the
        table are measured), composed as the official ``forward_latency``: a mixed
        op costs Σ_k α_k · E[T(op_k, C_in, C_out)] with the widths' expectation under softmax(γ);
        the latency of reaching a cell's input is the β-weighted mix of its two inputs' latencies;
        the result is the sum over the three scales of the latency of reaching the last layer's
        output there (stem included in each). ``fix`` holds parameter groups (``"alpha"``,
        ``"beta"``, ``"gamma"``) at the official constants: α and β uniform, widths at the max."""
        self._check_arch(arch_index)
        fix = frozenset(fix or ())
        unknown = sorted(fix - set(ARCH_GROUPS))
        if unknown:
            raise SegnasError(f"multires supernet: unknown parameter group {unknown[0]!r} in fix "
                              f"(expected {', '.join(ARCH_GROUPS)})")
        device = self.alphas(arch_index)[0].device
        free_widths = "gamma" not in fix and self.width_search[arch_index]
        stem_ms, mats = self._latency_tables(arch_index, latency, free_widths, device)
        uniform = lambda p, n: torch.full(p.shape, 1.0 / n, device=device)  # noqa: E731
        alphas = [uniform(a, len(CELL_OPS)) if "alpha" in fix else F.softmax(a, dim=-1) for a in self.alphas(arch_index)]
        betas = [None] + [uniform(b, 2) if "beta" in fix else F.softmax(b, dim=-1) for b in self.betas(arch_index)]
        probs = [F.softmax(g, dim=-1) if free_widths else None for g in self.gammas(arch_index)]
        one = torch.ones(1, device=device)

        def dist(scale: int, layer: int, edge: str) -> torch.Tensor:
            if (edge == "in" and layer < 0) or (edge == "out" and layer == self.layers - 1) or not free_widths:
                return one
            return probs[scale][layer - max(scale - 1, 0)]

        stem = torch.tensor(stem_ms, device=device)
        outs: dict[int, torch.Tensor] = {0: stem}
        downs: dict[int, torch.Tensor] = {}
        for i, cells in enumerate(self.cells):
            new_outs, new_downs = {}, {}
            for j, cell in enumerate(cells):
                if j == 0:
                    reach = outs[0]
                elif i == j:
                    reach = downs[j - 1]
                else:
                    beta = betas[j][i - j - 1]
                    reach = beta[0] * downs[j - 1] + beta[1] * outs[j]
                alpha, p_in = alphas[j][i - j], dist(j, i - 1, "in")
                new_outs[j] = reach + torch.einsum("k,kab,a,b->", alpha, mats[(i, j, "keep")], p_in, dist(j, i, "out"))
                if cell.down is not None:
                    new_downs[j] = reach + torch.einsum("k,kab,a,b->", alpha, mats[(i, j, "down")], p_in,
                                                        dist(j + 1, i, "out"))
            outs, downs = new_outs, new_downs
        return outs[0] + outs[1] + outs[2]

    def latency_terms(self, arch_index: int, latency: LatencyModel | LatencyTable
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FasterSeg's decoupled fine-grained latencies: LAT(α | β, γ fixed), LAT(β | α, γ fixed),
        LAT(γ | α, β fixed), each differentiable only w.r.t. its own group (the others held at
        uniform α / β and max width, as ``architect.py`` calls ``forward_latency``)."""
        return (self.expected_latency(arch_index, latency, fix=("beta", "gamma")),
                self.expected_latency(arch_index, latency, fix=("alpha", "gamma")),
                self.expected_latency(arch_index, latency, fix=("alpha", "beta")))

    def latency_loss(self, arch_index: int, latency: LatencyModel | LatencyTable,
                     weights: Sequence[float] = LATENCY_TERM_WEIGHTS) -> torch.Tensor:
        """Σ weights · ``latency_terms`` (official weights 1/500, 497/500, 2/500); multiply by the
        latency weight λ (official 0.01 for the student, 0 for the teacher)."""
        return sum(w * t for w, t in zip(weights, self.latency_terms(arch_index, latency)))

    # ------------------------------------------------------------------ derivation
    def candidates(self, arch_index: int) -> dict[str, MultiResArch]:
        """The two networks official FasterSeg derives from the current α/β/γ: ``"02"`` (branches
        ending at 1/32 and 1/8) and ``"12"`` (1/32 and 1/16), by the official rules (argmax
        operators; non-strided skips removed down to a minimum depth, none kept at all for the
        teacher; paths from β; widths from γ argmax, max for archs without width search)."""
        self._check_arch(arch_index)
        widths = (list(range(len(self.width_ratios))) if self.width_search[arch_index] else [self._max_index])
        branches = official_branches(self.alphas(arch_index), [None] + self.betas(arch_index),
                                     self.gammas(arch_index), widths, ignore_skip=not self.width_search[arch_index])
        stem_w, head_w = self.stem_head_widths[arch_index]
        return {name: MultiResArch(tuple(branches[s] for s in lasts), layers=self.layers, num_scales=NUM_SCALES,
                                   base_width=self.base_width, width_ratios=self.width_ratios,
                                   stem_width=stem_w, head_width=head_w)
                for name, lasts in PAIRS.items()}

    def derive(self, arch_index: int, latency_fn: Callable[[MultiResArch], float] | None = None,
               target_ms: float | None = None, mious: Mapping[str, float] | None = None) -> MultiResArch:
        """The derived network of arch ``arch_index``: of ``candidates``, the one with the better
        objective mIoU·(latency/target)^-0.07 (official ``train.py``). ``mious`` maps ``"02"`` /
        ``"12"`` to validation mIoU of those heads (missing: equal); ``latency_fn(arch)`` gives ms
        (missing: equal). With neither, the official tie rule keeps 1/32 + 1/16."""
        cands = self.candidates(arch_index)
        target = target_ms or OFFICIAL_LATENCY_TARGET_MS
        objective = {}
        for name, arch in cands.items():
            miou = float(mious[name]) if mious is not None else 1.0
            objective[name] = official_objective(miou, float(latency_fn(arch)), target) if latency_fn else miou
        pair = official_pair(objective["02"], objective["12"])
        return cands[next(name for name, lasts in PAIRS.items() if lasts == pair)]

    def derived_latency(self, arch: MultiResArch, latency: LatencyModel | LatencyTable) -> float:
        """Predicted latency (ms) of a derived network at this supernet's input size, from the
        operator table of ``latency`` (a latency model or a ``LatencyTable``), call overhead
        included: a ready ``latency_fn`` for ``derive``."""
        from segnas.cost.predictor import predict_latency

        keys = MULTIRES.latency_keys(arch, self.num_classes, self.input_size)
        return predict_latency(keys, _table_of(latency), (1, 3, *self.input_size)).total_ms


def _mix(inputs, op: Callable[[torch.Tensor], torch.Tensor], s_in, s_out) -> torch.Tensor:
    """Σ β · op(input) over a cell's inputs, times the straight-through width scores."""
    out = 0
    for beta, t in inputs:
        y = op(t)
        out = out + (y if beta is None else beta * y)
    for score in (s_in, s_out):
        if score is not None:
            out = out * score
    return out


