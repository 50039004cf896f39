"""The ``multires`` search space: FasterSeg's multi-resolution, multi-branch networks (derived form).

A network is a stem to 1/8 of the input (3×3 conv s2 → ``conv_2x`` s2 → ``conv_2x`` s2) followed by
one or more *branches*. A branch is a chain of cells; each cell applies one operator of
``CELL_OPS`` and either keeps its scale or halves the resolution (stride 2, twice the channels per
FasterSeg's 12·8·2^scale rule), so its path only steps to coarser scales, one at a time. Branches
that begin with identical cells share them (computed once), as in the official derived network.
Each branch ending at 1/2^k of 1/8 is refined back to 1/8 (1×1 conv-BN-ReLU, bilinear ×2, concat
with the branch's last feature at that scale, 3×3 conv-BN-ReLU, per scale); the 1/8 outputs of all
branches are concatenated, fused (1×1 conv-BN-ReLU), classified (``head``) and upsampled ×8.
Training-only auxiliary heads see each coarser scale (1/16, 1/32 by default).

Every piece is built from the ``segnas.nn.ops`` registry; ``latency_keys`` lists the ``OpKey`` of
every piece that runs in eval mode, so per-op latencies compose into the network's latency.
Not keyed (no compute of their own worth a table entry): the input padding, the crop, channel
concatenations.

Modules: ``arch`` (``MultiResArch``, ``Branch``, validation, constants), ``network`` (the plan and
``MultiResNet``), ``space`` (``MultiResSpace``, registered as ``"multires"``, and ``MULTIRES``),
``supernet`` (FasterSeg's co-search supernet), ``official`` (import of the released official
architectures, derived as the official ``train.py`` does) and ``summary`` (a printable structure
table).
"""

from segnas.spaces.multires.arch import (ALIGN_CORNERS, CELL_OPS, DEFAULT_WIDTH_RATIOS, HEAD_MID_LIMIT, STEM_LEVELS,
                                         VERSION, Branch, MultiResArch, feature_channels, scale_name, stem_channels)
from segnas.spaces.multires.network import (CellStep, MultiResNet, Plan, conv_key, head_key, plan_network, prefix_key,
                                            stem_plan, upsample_key)
from segnas.spaces.multires.official import (OFFICIAL_LATENCY_TARGET_MS, OFFICIAL_PRIMITIVES, OFFICIAL_STEM_HEAD_WIDTH,
                                             derive_official, import_official, official_branches, official_objective,
                                             official_pair)
from segnas.spaces.multires.space import MULTIRES, MultiResSpace
from segnas.spaces.multires.summary import structure_rows, summarize

__all__ = ["ALIGN_CORNERS", "CELL_OPS", "DEFAULT_WIDTH_RATIOS", "HEAD_MID_LIMIT", "STEM_LEVELS", "VERSION", "Branch",
           "MultiResArch", "feature_channels", "scale_name", "stem_channels", "CellStep", "MultiResNet", "Plan",
           "conv_key", "head_key", "plan_network", "prefix_key", "stem_plan", "upsample_key",
           "OFFICIAL_LATENCY_TARGET_MS", "OFFICIAL_PRIMITIVES", "OFFICIAL_STEM_HEAD_WIDTH", "derive_official",
           "import_official", "official_branches", "official_objective", "official_pair", "MULTIRES",
           "MultiResSpace", "structure_rows", "summarize"]
