"""The supernet of the ``cells`` space (GAS): every candidate edge of every cell mixes the space's
operators, and every cell has its own architecture parameters.

Cell k holds α_k of shape (E, K): E = nodes·(nodes + 3)/2 candidate edges (node i reads states
0..i+1: the two preprocessed inputs and the nodes before it; edge (i, j) is row i·(i+3)/2 + j) and
K = len(space.ops) operators in the space's order, the zero operation (``none``) included when the
space has it. Edge weights are softmax(α_k) per row; a node sums its edges' Σ_o w_o·op_o(x) (the
zero operation contributes nothing). In "argmax" mode the supernet runs the network ``derive()``
gives, unweighted, on the shared weights. There is no width search: "max", "min", "random" and
"gumbel" all run the soft mixture (``width_search`` is False, so the engine's pre-training makes
one pass per step).

**Guide.** ``attach_guide(guide)`` installs an architecture-side transform of the cells' α
(``guide(list of α_k) -> list of α'_k``; GAS's GCN-guided module, ``segnas.search.controllers.gcn``);
the supernet then runs, costs and derives from α' instead of α, and the guide's parameters are
architecture parameters (``arch_parameters``). The guide is held outside the module tree, so the
supernet's ``state_dict`` — checkpoints, pre-trained supernets, the weight-sharing evaluator —
is the same with or without it (the strategy checkpoints the guide itself); device moves reach it.
Without a guide (the default) nothing of it runs.

**Derivation** (``derive``), per cell from its edge weights w = softmax(α'): every edge's strength
is its largest weight among the operators other than ``none`` and its operator that argmax; node i
keeps its ``space.kept(i)`` (``node_inputs``, 2) strongest incoming edges (ties: the earlier
input). The stem and decoder are fixed.

**Expected latency** (``expected_latency``): fixed parts (stem, the cells' preprocessing, decoder)
+ Σ over cells and edges of (kept(i) / (i + 2)) · Σ_o p_o·t_o + one call overhead, where t_o is the
latency model's table entry of the operator on that edge (0 for the identity) and p = softmax of
α' over the operators other than ``none``: the operator derivation would pick is drawn from the
non-zero ones, and a node keeps kept(i) of its i + 2 edges, so this is the derived network's
latency when the kept edges are drawn at random. Pushing weight into ``none`` therefore does not
lower it (it would not make the derived network faster either). ``derived_latency`` is the table
latency of the network ``derive`` gives, with the expected latency's gradient (straight-through).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.nn.segnet import pad_to_multiple, padded_size
from segnas.spaces.cells.arch import NONE, CellsArch, Edge
from segnas.spaces.cells.network import STAGE_STRIDES, CellPlan, CellsDecoder, cell_plans, decoder_pieces, stem_pieces
from segnas.spaces.cells.space import CellsSpace
from segnas.spaces.pieces import Piece, costs_time

if TYPE_CHECKING:
    from segnas.cost.latency_model import LatencyModel

MODES = ("max", "min", "random", "gumbel", "argmax")
#: Logit magnitude ``select`` writes (softmax of ±10: 1 − 2e-9 against the rest).
SELECT_LOGIT = 10.0


def edge_row(node: int, source: int) -> int:
    """Row of α for the edge from state ``source`` into intermediate node ``node``."""
    return node * (node + 3) // 2 + source


def num_edges(nodes: int) -> int:
    return edge_row(nodes, 0)


class MixedCell(nn.Module):
    """A cell with every candidate edge holding one module per operator choice."""

    def __init__(self, plan: CellPlan, nodes: int, choices: Sequence[str]) -> None:
        super().__init__()
        self.nodes = nodes
        self.pre0, self.pre1 = plan.pre0.build(), plan.pre1.build()
        self.edges = nn.ModuleList(nn.ModuleList(plan.edge(i, j, op).build() for op in choices)
                                   for i in range(nodes) for j in range(i + 2))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None,
                chosen: list[list[tuple[int, int]]] | None = None) -> torch.Tensor:
        """``weights`` (E, choices): the soft cell; ``chosen`` (per node (source, choice) pairs): the
        discrete one."""
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(self.nodes):
            out = 0
            if chosen is not None:
                for j, c in chosen[i]:
                    out = out + self.edges[edge_row(i, j)][c](states[j])
            else:
                for j in range(i + 2):
                    e = edge_row(i, j)
                    for c, op in enumerate(self.edges[e]):
                        out = out + weights[e, c] * op(states[j])
            states.append(out)
        return torch.cat(states[2:], dim=1)


class CellsSupernet(nn.Module):
    """GAS's supernet over a ``CellsSpace`` (see the module docstring); one architecture."""

    num_archs = 1
    width_search = (False,)

    def __init__(self, space: CellsSpace, num_classes: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.input_size = tuple(int(v) for v in input_size)
        self.plans = cell_plans(space)
        self.stem = nn.Sequential(*(p.build() for p in stem_pieces(space)))
        self.cells = nn.ModuleList(MixedCell(p, space.nodes, space.choices) for p in self.plans)
        self.decoder = CellsDecoder(space, num_classes)
        shape = (num_edges(space.nodes), len(space.ops))
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(*shape)) for _ in self.plans)
        #: columns of α (and of the edge weights) that are operators of derived networks (not ``none``)
        self.columns = [k for k, op in enumerate(space.ops) if op != NONE]
        self.node_scale = torch.tensor([space.kept(i) / (i + 2) for i in range(space.nodes) for _ in range(i + 2)])
        self.width_mode = "gumbel"
        self._cost_cache: dict = {}
        object.__setattr__(self, "guide", None)  # outside the module tree: see the module docstring

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cost_cache"] = {}  # holds the cost functions (and their owners): not part of the network
        return state

    # ------------------------------------------------------------------ guide
    def attach_guide(self, guide: nn.Module | None) -> None:
        """Run, cost and derive from ``guide(α)`` (None: from α itself)."""
        object.__setattr__(self, "guide", guide)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.guide is not None:
            self.guide._apply(fn, *args, **kwargs)
        return self

    def effective_alphas(self) -> list[torch.Tensor]:
        """α'_k of every cell: ``guide(α)`` with a guide, else α."""
        alphas = list(self.alphas)
        return alphas if self.guide is None else self.guide(alphas)

    def edge_weights(self) -> list[torch.Tensor]:
        """Per cell softmax(α'_k) over every operator of the space, (E, K)."""
        return [torch.softmax(a, dim=-1) for a in self.effective_alphas()]

    # ------------------------------------------------------------------ engine contract
    def _check(self, arch_index: int) -> None:
        if arch_index != 0:
            raise SegnasError(f"cells supernet: arch_index {arch_index} outside 0..0 (one architecture)")

    def arch_parameters(self, arch_index: int = 0) -> list[nn.Parameter]:
        self._check(arch_index)
        return list(self.alphas) + (list(self.guide.parameters()) if self.guide is not None else [])

    def arch_module_parameters(self, arch_index: int = 0) -> list[nn.Parameter]:
        """The GGM's weights: trained with α, without α's weight decay."""
        self._check(arch_index)
        return list(self.guide.parameters()) if self.guide is not None else []

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        ids = {id(p) for p in self.alphas}
        return (p for p in self.parameters() if id(p) not in ids)

    def set_width_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise SegnasError(f"cells supernet: unknown mode {mode!r} (expected {', '.join(MODES)})")
        self.width_mode = mode

    def forward(self, x: torch.Tensor, arch_index: int = 0) -> torch.Tensor:
        self._check(arch_index)
        h, w = x.shape[-2:]
        x = self.stem(pad_to_multiple(x, STAGE_STRIDES[-1]))
        states = [x, x]
        if self.width_mode == "argmax":
            with torch.no_grad():
                chosen = [self._discrete(wk) for wk in self.edge_weights()]
            for cell, ck in zip(self.cells, chosen):
                states.append(cell(states[-2], states[-1], chosen=ck))
        else:
            for cell, wk in zip(self.cells, self.edge_weights()):
                states.append(cell(states[-2], states[-1], weights=wk[:, self.columns]))
        return self.decoder.out(self.decoder(states))[..., :h, :w]

    # ------------------------------------------------------------------ derivation
    def _discrete(self, weights: torch.Tensor) -> list[list[tuple[int, int]]]:
        """Per node the kept (source, choice) pairs of one cell's edge weights (module docstring)."""
        strength, best = weights[:, self.columns].max(dim=-1)
        nodes = []
        for i in range(self.space.nodes):
            ranked = sorted(range(i + 2), key=lambda j: (-float(strength[edge_row(i, j)]), j))
            nodes.append([(j, int(best[edge_row(i, j)])) for j in sorted(ranked[:self.space.kept(i)])])
        return nodes

    @torch.no_grad()
    def derive(self) -> CellsArch:
        """The network of the current (guided) weights: every cell's strongest edges and operators."""
        choices = self.space.choices
        cells = [tuple(tuple(Edge(choices[c], j) for j, c in node) for node in self._discrete(w))
                 for w in self.edge_weights()]
        return self.space.make_arch(cells)

    @torch.no_grad()
    def select(self, arch: CellsArch) -> None:
        """Make "argmax" mode run exactly ``arch`` on the shared weights (weight-sharing evaluation):
        overwrites α (call it on a copy of a searching supernet). SegnasError if ``arch`` is not a
        network of this space."""
        if self.guide is not None:
            raise SegnasError("cells supernet: select() sets α itself; detach the guide first (attach_guide(None))")
        mismatch = [n for n in ("layout", "channels", "nodes", "stem_channels", "decoder_width", "decoder_strides")
                    if getattr(arch, n) != getattr(self.space, n)]
        if mismatch:
            raise SegnasError(f"cells supernet: the architecture's {', '.join(mismatch)} differ from this space's")
        choices = self.space.choices
        for k, cell in enumerate(arch.cells):
            for i, node in enumerate(cell):
                if len(node) != self.space.kept(i) or any(e.op not in choices for e in node):
                    raise SegnasError(f"cells supernet: cell {k} node {i} ({[e.to_dict() for e in node]}) is not "
                                      f"a choice here ({self.space.kept(i)} edges of {', '.join(choices)})")
        for alpha, cell in zip(self.alphas, arch.cells):
            alpha.fill_(-SELECT_LOGIT)
            for i, node in enumerate(cell):
                for e in node:
                    alpha[edge_row(i, e.input), self.columns[choices.index(e.op)]] = SELECT_LOGIT

    # ------------------------------------------------------------------ latency
    def _fixed_pieces(self) -> list[Piece]:
        return (stem_pieces(self.space) + [p for plan in self.plans for p in (plan.pre0, plan.pre1)]
                + decoder_pieces(self.space, self.num_classes))

    def _edge_keys(self) -> list[list[list[OpKey]]]:
        """Per cell, per edge, per operator choice: the key at the costed input size."""
        ph, pw = padded_size(self.input_size, STAGE_STRIDES[-1])
        return [[[plan.edge(i, j, op).key(ph, pw) for op in self.space.choices]
                 for i in range(self.space.nodes) for j in range(i + 2)] for plan in self.plans]

    def latency_keys(self, arch_index: int = 0) -> list[OpKey]:
        """Every operator the expected latency looks up (fixed parts and every candidate)."""
        self._check(arch_index)
        ph, pw = padded_size(self.input_size, STAGE_STRIDES[-1])
        keys = [p.key(ph, pw) for p in self._fixed_pieces()]
        keys += [k for cell in self._edge_keys() for edge in cell for k in edge]
        return [k for k in keys if costs_time(k)]

    def cost_tables(self, cost: Callable[[list[OpKey]], list[float]]) -> tuple[float, list[torch.Tensor]]:
        """(cost of the fixed parts, per cell an (E, choices) tensor of edge costs); ``cost`` maps
        OpKeys to values (latency ms from a table, or GFLOPs). Cached per ``cost``."""
        if cost not in self._cost_cache:
            ph, pw = padded_size(self.input_size, STAGE_STRIDES[-1])
            fixed = [k for k in (p.key(ph, pw) for p in self._fixed_pieces()) if costs_time(k)]
            edges = [k for cell in self._edge_keys() for edge in cell for k in edge]
            timed = [k for k in edges if costs_time(k)]
            values = cost(fixed + timed)
            by_key = dict(zip(timed, values[len(fixed):]))
            flat = torch.tensor([by_key.get(k, 0.0) for k in edges], dtype=torch.float32)
            tables = list(flat.view(len(self.plans), num_edges(self.space.nodes), -1).unbind(0))
            self._cost_cache[cost] = (float(sum(values[:len(fixed)])), tables)
        return self._cost_cache[cost]

    def expected_cost(self, cost: Callable[[list[OpKey]], list[float]],
                      alphas: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Differentiable expected cost of the derived network (module docstring); ``alphas``: the
        cells' α' when the caller has them already (else ``effective_alphas()``)."""
        fixed, tables = self.cost_tables(cost)
        device = self.alphas[0].device
        scale = self.node_scale.to(device)
        total = torch.tensor(fixed, device=device)
        for alpha, table in zip(self.effective_alphas() if alphas is None else alphas, tables):
            p = torch.softmax(alpha[:, self.columns], dim=-1)
            total = total + (scale * (p * table.to(device)).sum(-1)).sum()
        return total

    def derived_cost(self, cost: Callable[[list[OpKey]], list[float]]) -> torch.Tensor:
        """The cost of the network ``derive`` gives (its kept edges and their operators) as the value,
        with the gradient of ``expected_cost`` (straight-through): a loss on it sees the network the
        search would return, not the soft mixture (whose expected cost can sit far from it while the
        operator weights are nearly even), and still moves α smoothly."""
        alphas = self.effective_alphas()
        soft = self.expected_cost(cost, alphas)
        fixed, tables = self.cost_tables(cost)
        hard = fixed
        with torch.no_grad():
            for weights, table in zip((torch.softmax(a.detach(), dim=-1) for a in alphas), tables):
                hard += sum(float(table[edge_row(i, j), c]) for i, node in enumerate(self._discrete(weights))
                            for j, c in node)
        return soft + (hard - soft.detach())

    def expected_latency(self, arch_index: int, latency: LatencyModel) -> torch.Tensor:
        """Differentiable expected latency (ms): ``expected_cost`` over the latency model's table
        entries (``latency.op_latencies``, missing ones measured) plus one runtime call overhead."""
        self._check(arch_index)
        return self.expected_cost(latency.op_latencies) + latency.call_overhead()

    def derived_latency(self, arch_index: int, latency: LatencyModel) -> torch.Tensor:
        """The derived network's table latency (ms) with the expected latency's gradient
        (``derived_cost`` over the latency model's table entries, plus one call overhead)."""
        self._check(arch_index)
        return self.derived_cost(latency.op_latencies) + latency.call_overhead()
