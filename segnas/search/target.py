"""The latency target's check before any search work: a target below the runtime's call overhead,
or far below the cheapest network a space holds, is refused with the fastest network found."""

from __future__ import annotations

from typing import Any

import numpy as np

from segnas.cost import LatencyModel
from segnas.errors import SegnasError, TargetOutOfReach
from segnas.parallel import default_key
from segnas.progress import Echo
from segnas.search.base import SearchContext
from segnas.spaces.base import SearchSpace

#: The target check before a search: spread samples drawn, and how much slower than the target
#: the cheapest of them must be predicted for the target to be refused (a margin: the cheapest is
#: picked by a rough size, channels in × out × output pixels summed over its operators, which
#: ignores kernel sizes and groups; and a rarer network might be a little faster than any drawn).
TARGET_CHECK_DRAWS = 256
TARGET_CHECK_MARGIN = 1.5


def check_target_reachable(space: SearchSpace, latency: LatencyModel, num_classes: int, seed: int = 0,
                           echo: Echo | None = None) -> None:
    """TargetOutOfReach naming ``latency.target_ms`` when the target is below the runtime's call
    overhead, or when the cheapest of TARGET_CHECK_DRAWS spread samples of ``space`` is predicted
    TARGET_CHECK_MARGIN times slower than the target. Costs one prediction (its operators are
    measured into the table, which the search reuses); leaves every random generator as it was."""
    import torch

    target = latency.target_ms
    if target is None:
        return
    overhead = latency.call_overhead()
    if target <= overhead:
        raise TargetOutOfReach(f"latency.target_ms: {target:g} ms is below the runtime's call overhead alone "
                               f"({overhead:.3f} ms on {latency.describe()})",
                               "no network can meet it, raise the target")
    rng = np.random.default_rng(seed)
    archs: dict[str, Any] = {}
    for _ in range(TARGET_CHECK_DRAWS):
        try:
            arch = space.sample(rng, spread=True)
        except SegnasError:
            continue
        archs.setdefault(default_key(arch), arch)
    if not archs:
        return

    def size(arch: Any) -> float:
        return sum(k.cin * k.cout * k.h * k.w / k.stride ** 2 for k in space.latency_keys(arch, num_classes, latency.size))

    cheapest = min(archs.values(), key=size)
    if echo:
        echo(f"checking the latency target {target:g} ms against the cheapest of {len(archs)} networks drawn")
    with torch.random.fork_rng():
        fastest = float(latency.predict(space, cheapest, num_classes))
    if fastest > TARGET_CHECK_MARGIN * target:
        mobile = "" if space.name == "mobile" else "; for saswot, random, rl and supernet, the mobile space ({})"
        raise TargetOutOfReach(
            f"latency.target_ms: {target:g} ms is out of reach of space {space.name!r}: the cheapest of {len(archs)} "
            f"networks drawn is predicted at {fastest:.2f} ms on {latency.describe()}",
            f"raise the target, or search a smaller space ({space.smaller} in the method's space settings"
            + mobile.format("<method>.space: mobile; --space mobile") + "), or search anyway with "
            "latency.check_target false",
            f"raise the target in a new comparison, or give this method a smaller space in its methods entry "
            f"({space.smaller} in its space settings" + mobile.format("its space: mobile") + "), or search "
            "anyway with latency.check_target false")


def refuse_unreachable_target(space: SearchSpace, ctx: SearchContext) -> None:
    """``check_target_reachable`` for a search job, unless ``latency.check_target`` is false."""
    if ctx.settings.latency.check_target:
        check_target_reachable(space, ctx.latency, ctx.num_classes, ctx.settings.seed, ctx.echo)
