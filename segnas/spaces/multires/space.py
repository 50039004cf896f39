"""The ``multires`` space: FasterSeg's settings (depth, scales, widths), sampling and mutation of
derived networks, and the space contract (``segnas.spaces.base.SearchSpace``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.base import SearchSpace, register_default, register_space
from segnas.spaces.multires.arch import (CELL_OPS, DEFAULT_WIDTH_RATIOS, VERSION, Branch, MultiResArch,
                                         check_shape)
from segnas.spaces.multires.network import MultiResNet, plan_network, prefix_key
from segnas.spaces.pieces import pieces_latency_keys

if TYPE_CHECKING:
    from segnas.spaces.multires.supernet import MultiResSupernet


@register_space("multires")
class MultiResSpace(SearchSpace[MultiResArch]):
    """The ``multires`` space: settings for sampling, and the space contract."""

    version: ClassVar[int] = VERSION
    smaller: ClassVar[str] = "fewer layers or a smaller base_width"

    def __init__(self, layers: int = 16, num_scales: int = 3, base_width: int = 12,
                 width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS, stem_width: float = 1.0,
                 head_width: float = 1.0, num_branches: int = 2) -> None:
        self.layers = layers
        self.num_scales = num_scales
        self.base_width = base_width
        self.width_ratios = tuple(float(r) for r in width_ratios)
        self.stem_width = stem_width
        self.head_width = head_width
        self.num_branches = num_branches

        def fail(where: str, msg: str) -> None:
            raise SegnasError(f"multires space: {where}: {msg}")

        check_shape(fail, layers, num_scales, base_width, self.width_ratios, stem_width, head_width)
        if layers < num_scales:
            fail("layers", f"at least one layer per scale ({num_scales}), got {layers}")
        if not 1 <= num_branches <= num_scales:
            fail("num_branches", f"1..{num_scales}, got {num_branches}")

    # ---- contract
    def arch_from_dict(self, d: Any) -> MultiResArch:
        return MultiResArch.from_dict(d)

    def build(self, arch: MultiResArch, num_classes: int, aux: bool = True) -> MultiResNet:
        return MultiResNet(arch, num_classes, aux=aux)

    def latency_keys(self, arch: MultiResArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        """OpKey of every piece run in eval mode, at the sizes after padding to ``arch.stride``."""
        return pieces_latency_keys(plan_network(arch, num_classes).pieces, input_size, arch.stride)

    def supernet(self, num_classes: int, input_size: tuple[int, int], **options: Any) -> MultiResSupernet:
        """FasterSeg's co-search supernet of these settings (``supernet.MultiResSupernet``) composing
        latencies at ``input_size`` (H, W)."""
        from segnas.spaces.multires.supernet import MultiResSupernet

        return MultiResSupernet.from_space(self, num_classes, input_size, **options)

    def min_cells(self, last: int) -> int:
        """Fewest cells a branch ending at scale ``last`` keeps (official: round(L/3) + 2·last)."""
        return min(self.layers, int(round(self.layers / 3)) + 2 * last)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> MultiResArch:
        """A random derived network, drawn like FasterSeg derives one: one operator (plus a non-skip
        fallback), one width and one skip priority per supernet node (layer, scale), shared by all
        branches; random paths; non-strided ``skip`` cells are removed down to ``min_cells``.

        ``spread`` first draws a per-network cap on the width choice and then widths up to it, so
        that a sample covers the space's latency range (uniform widths concentrate around the
        middle); used where architectures must span slow to fast (benchmarks, proxy ground truth)."""
        L, S = self.layers, self.num_scales
        op_grid = rng.integers(0, len(CELL_OPS), size=(L, S))
        alt_grid = rng.integers(1, len(CELL_OPS), size=(L, S))
        cap = int(rng.integers(0, len(self.width_ratios))) if spread else len(self.width_ratios) - 1
        width_grid = rng.integers(0, cap + 1, size=(L, S))
        prio_grid = rng.random(size=(L, S))
        lasts = [S - 1] + sorted(rng.choice(S - 1, size=self.num_branches - 1, replace=False).tolist(), reverse=True)
        branches = []
        for last in lasts:
            downs = sorted(rng.choice(L - 1, size=last, replace=False).tolist()) if last else []
            path = [0] * L
            for i in range(1, L):
                path[i] = path[i - 1] + (1 if i - 1 in downs else 0)
            branches.append(self._compact(path, op_grid, alt_grid, width_grid, prio_grid))
        return self._arch(branches)

    def _compact(self, path: list[int], op_grid, alt_grid, width_grid, prio_grid) -> Branch:
        n = len(path)
        strided = [i + 1 < n and path[i + 1] > path[i] for i in range(n)]
        ops = [CELL_OPS[op_grid[i, path[i]]] for i in range(n)]
        widths = [int(width_grid[i + 1, path[i + 1]]) for i in range(n - 1)]
        plain_skips = {i for i in range(n) if ops[i] == "skip" and not strided[i]}
        removable = set(plain_skips)
        # after every strided cell at least one cell stays before the next one (or the end)
        bounds = [i for i in range(n) if strided[i]] + [n]
        for a, b in zip(bounds, bounds[1:]):
            seg = list(range(a + 1, b))
            if seg and all(i in removable for i in seg):
                removable.discard(seg[0])
        budget = max(len(path) - self.min_cells(path[-1]), 0)
        removed = set(sorted(removable, key=lambda i: -prio_grid[i, path[i]])[:budget])
        for i in plain_skips - removed:  # kept plain skips fall back to a real operator
            ops[i] = CELL_OPS[alt_grid[i, path[i]]]
        kept = [i for i in range(n) if i not in removed]
        return Branch(tuple(path[i] for i in kept), tuple(ops[i] for i in kept), tuple(widths[i] for i in kept[:-1]))

    def _arch(self, branches: Sequence[Branch]) -> MultiResArch:
        return MultiResArch(tuple(branches), self.layers, self.num_scales, self.base_width, self.width_ratios,
                            self.stem_width, self.head_width)

    def mutate(self, arch: MultiResArch, rng: np.random.Generator) -> MultiResArch:
        """A valid neighbour: one operator, one width, one cell added or removed, or one downsampling
        moved by a layer. Edits to a cell shared by several branches apply to all of them."""
        for _ in range(100):
            kind = rng.choice(["op", "width", "depth", "down"])
            k = int(rng.integers(len(arch.branches)))
            new = getattr(self, f"_mutate_{kind}")(arch, k, rng)
            if new is not None and new != arch:
                return new
        raise SegnasError("multires: no valid mutation found for this architecture")

    def _apply(self, arch: MultiResArch, k: int, i: int, edit) -> MultiResArch:
        """Apply ``edit(branch) -> branch`` to branch ``k`` and every branch sharing its cell ``i``."""
        b = arch.branches[k]
        shared = [j for j, o in enumerate(arch.branches)
                  if j == k or (i < len(o) - 1 and i < len(b) - 1 and prefix_key(o, i) == prefix_key(b, i))]
        branches = [edit(o) if j in shared else o for j, o in enumerate(arch.branches)]
        return replace(arch, branches=tuple(branches))

    def _mutate_op(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        i = int(rng.integers(len(b)))
        choices = [o for o in (CELL_OPS if b.strided(i) else CELL_OPS[1:]) if o != b.ops[i]]
        op = choices[int(rng.integers(len(choices)))]
        return self._apply(arch, k, i, lambda o: replace(o, ops=o.ops[:i] + (op,) + o.ops[i + 1:]))

    def _mutate_width(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        if len(b) < 2 or len(arch.width_ratios) < 2:
            return None
        i = int(rng.integers(len(b) - 1))
        choices = [w for w in range(len(arch.width_ratios)) if w != b.widths[i]]
        w = choices[int(rng.integers(len(choices)))]
        return self._apply(arch, k, i, lambda o: replace(o, widths=o.widths[:i] + (w,) + o.widths[i + 1:]))

    def _mutate_depth(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        n = len(b)
        if rng.random() < 0.5 and n < arch.layers:  # insert a non-strided cell before cell i (or at the end)
            i = int(rng.integers(n + 1))
            scale = b.scales[i] if i < n else b.last
            op = CELL_OPS[int(rng.integers(1, len(CELL_OPS)))]
            w = int(rng.integers(len(arch.width_ratios)))
            widths = b.widths[:i] + (w,) + b.widths[i:] if i < n else b.widths + (w,)
            new = Branch(b.scales[:i] + (scale,) + b.scales[i:], b.ops[:i] + (op,) + b.ops[i:], widths)
        else:  # remove a non-strided cell that does not end a segment after a strided cell
            removable = [i for i in range(n) if not b.strided(i) and n - 1 > b.last
                         and not (i > 0 and b.strided(i - 1) and (i == n - 1 or b.strided(i + 1)))]
            if not removable:
                return None
            i = removable[int(rng.integers(len(removable)))]
            widths = b.widths[:i] + b.widths[i + 1:] if i < n - 1 else b.widths[:-1]
            new = Branch(b.scales[:i] + b.scales[i + 1:], b.ops[:i] + b.ops[i + 1:], widths)
        return replace(arch, branches=arch.branches[:k] + (new,) + arch.branches[k + 1:])

    def _mutate_down(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        downs = [i for i in range(len(b)) if b.strided(i)]
        if not downs:
            return None
        d = downs[int(rng.integers(len(downs)))]
        target = d + (1 if rng.random() < 0.5 else -1)
        if not 0 <= target <= len(b) - 2 or target in downs:
            return None
        new_downs = set(downs) - {d} | {target}
        scales = [0]
        for i in range(len(b) - 1):
            scales.append(scales[-1] + (1 if i in new_downs else 0))
        ops = list(b.ops)
        if ops[d] == "skip":  # the formerly strided cell is now a plain cell: no identity skips
            ops[d] = CELL_OPS[int(rng.integers(1, len(CELL_OPS)))]
        new = Branch(tuple(scales), tuple(ops), b.widths)
        return replace(arch, branches=arch.branches[:k] + (new,) + arch.branches[k + 1:])


#: The space with FasterSeg's settings: what ``get_space("multires")`` returns.
MULTIRES = register_default(MultiResSpace())
