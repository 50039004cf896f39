"""The ``cells`` search space (GAS, docs/methods/gas.md): a stem to 1/4, a sequence of cells over strides
1/4 → 1/32, and a light decoder fusing two strides; every cell has its own architecture.

Network (defaults sized for a search on a 2-core CPU, every number an option of ``CellsSpace``):

- **stem**: two 3×3 stride-2 conv-BN-ReLUs to 1/4 with ``stem_channels`` (16);
- **cells**: ``layout`` cells per stage at 1/4, 1/8, 1/16, 1/32 — (1, 2, 2, 2): 7 cells, and the
  first cell of each of the last three stages (cells 1, 3, 5) is a *reduction* cell, whose edges
  from its two inputs have stride 2. Cell k reads the outputs of cells k−2 and k−1 (the stem's
  output for the first ones), each brought to the stage's ``channels`` per node (12, 24, 48, 96) by a
  1×1 conv-BN-ReLU (a factorized reduce for the older input after a reduction). The cell is a
  DAG of ``nodes`` (3) intermediate nodes; node i sums ``node_inputs`` (2) edges chosen from its
  i + 2 predecessors (the two inputs and the earlier nodes), each edge one operator; the cell's
  output concatenates its nodes (nodes × channels).
- **operators** (``ops``, ``arch.CELL_OPS``): ``none`` (zero; search only), ``skip`` (identity,
  factorized reduce when strided), ``conv3x3`` (3×3 conv-BN-ReLU), ``sep3x3`` (depthwise 3×3 then
  pointwise 1×1, each BN-ReLU), ``dil2_sep3x3``, ``dil4_sep3x3``, ``dil8_sep3x3`` (the same,
  dilated), ``avg_pool3x3``; ``max_pool3x3`` is available as an option.
- **decoder** (fixed): the outputs of the stages at ``decoder_strides`` (1/8 and 1/32) each go
  through a 1×1 conv-BN-ReLU to ``decoder_width`` (64); the coarse one is upsampled to the fine
  stride and added; a head (3×3 conv-BN-ReLU + 1×1 classifier) predicts at the fine stride and the
  logits are upsampled to the input. Inputs of any H, W are padded to a multiple of 32.

Every piece is an ``OpKey`` of ``segnas.nn.ops``: the latency table, the derived network and the
supernet build from the same factories. Modules: ``arch`` (``CellsArch``, ``Edge``, validation),
``network`` (plans, pieces, ``CellsNet``), ``space`` (``CellsSpace``, registered as ``"cells"``,
``CELLS``) and ``supernet`` (``CellsSupernet``).
"""

from segnas.spaces.cells.arch import CELL_OPS, DEFAULT_OPS, NONE, STAGE_STRIDES, VERSION, CellsArch, Edge
from segnas.spaces.cells.network import CellPlan, CellsNet, cell_plans, plan_network
from segnas.spaces.cells.space import CELLS, CellsSpace

__all__ = ["CELL_OPS", "DEFAULT_OPS", "NONE", "STAGE_STRIDES", "VERSION", "CellsArch", "Edge", "CellPlan", "CellsNet",
           "cell_plans", "plan_network", "CELLS", "CellsSpace"]
