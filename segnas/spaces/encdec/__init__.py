"""The ``encdec`` search space (auxiliary-cell RL search, Nekrasov et al., CVPR 2019; docs/methods/rl.md;
official code DrSleep/nas-segm-pytorch, ``MicroDecoder``/``ContextualCell``/``MicroController``).

Network (every number an option of ``EncDecSpace``; the architecture records the encoder kind, its
width multiplier and the decoder width, so an arch file builds on its own):

- **encoder** (fixed): MobileNetV2 (``segnas.zoo.mobilenetv2``, width multiplier
  ``encoder_width``, 1.0), returning its stage outputs at 1/4, 1/8, 1/16, 1/32 (24, 32, 96, 320
  channels at 1.0). Pre-trained by the shared trainer as the zoo segmenter ``mobilenetv2_deeplabv3``
  (``EncoderSegmenter``); the space option ``encoder_weights`` (a file) loads it into ``build``.
- **adapters**: each encoder output → 1×1 conv-BN-ReLU to ``width`` (48, the official
  ``AGG_CELL_SIZE``; not searched). These four maps start the *pool*.
- **decoder blocks** (``blocks``, 3): block b reads two pool entries (indices in 0..3+b, the same one
  twice allowed, as in the official code), applies one copy of the searched cell to each (the same
  design, separate weights), a 1×1 conv-BN-ReLU to each, upsamples the coarser one (bilinear) to the
  finer one's resolution and sums them; the sum joins the pool at the finer resolution.
- **output**: the blocks no later block reads are upsampled to 1/4, concatenated, fused by a 1×1
  conv-BN-ReLU to ``width`` and classified by a 1×1 conv; the logits are upsampled to the input.
  Unread *encoder* outputs are not collected (official). Differences from the official code: it
  concatenates at the finest resolution among the collected blocks (we always use 1/4) and its
  classifiers are 3×3 convs (ours 1×1, the project's ``classifier`` op).
- **contextual cell** (``cell_layers``, 4): states are 0 the cell input, 1 = ``first``(input), then
  for each later layer l = 1, 2, 3 two branches (states 3l − 1, 3l: an operator applied to a state
  chosen among 0 .. 3l − 2, i.e. any earlier state including earlier branches) and their sum (state
  3l + 1). The cell's output sums the loose ends: state 1 and every layer sum that no later layer
  reads (the last one always). Position choices per layer: 2, 5, 8 — the official genotypes (e.g.
  ``[2, [1, 0, 3, 6], ...]``) read state 1 from layer 1, which the released controller's 1, 4, 7
  position classifiers cannot emit; we follow the genotypes.
- **operators** (``arch.OP_NAMES``, the paper's order = the decision value): conv1x1, conv3x3,
  sep3x3, sep5x5, gap (global average pooling + 1×1 conv-BN-ReLU, broadcast), conv3x3_dil3,
  conv3x3_dil12, sep3x3_dil3, sep5x5_dil6, skip, none. Convs are conv-BN-ReLU; separable convs are
  ``segnas.nn`` depthwise k×k conv-BN-ReLU + pointwise conv-BN-ReLU (official: no BN/ReLU between
  them). ``none`` is zero: a layer whose branches are both ``none`` outputs zero.
- **auxiliary cells** (space option ``aux_cells``, off by default): each block's output also passes
  through its own copy of the cell and a 1×1 classifier; training mode then returns
  ``{"out", "aux": [3 maps]}``. They live in ``aux_heads`` (left out of parameter counts, never run
  in eval mode, so not exported or costed); ``EncDecNet.without_aux()`` drops them.

**Decisions** (``DecisionSpace``, the controller's order): block0.input0/1 (4 choices each),
block1.input0/1 (5), block2.input0/1 (6), cell.first (11), then per layer l = 1..3 input0, input1
(3l − 1 each) and op0, op1 (11 each): 19 decisions. Inputs of any H, W are padded to a multiple of 32.

Modules: ``arch`` (``EncDecArch``, ``Cell``, ``CellLayer``, operators), ``encoder`` (encoder kinds,
weight files), ``network`` (pieces, ``EncDecNet``), ``space`` (``EncDecSpace``, ``ENCDEC``).
"""

from segnas.spaces.encdec.arch import CELL_OPS, NONE, OP_NAMES, VERSION, Cell, CellLayer, EncDecArch
from segnas.spaces.encdec.encoder import (ENCODERS, EncoderSegmenter, build_encoder, load_encoder_weights,
                                          read_encoder_state, save_encoder_weights)
from segnas.spaces.encdec.network import ContextualCell, EncDecNet, plan_network
from segnas.spaces.encdec.space import ENCDEC, EncDecSpace

__all__ = ["CELL_OPS", "NONE", "OP_NAMES", "VERSION", "Cell", "CellLayer", "EncDecArch", "ENCODERS", "EncoderSegmenter",
           "build_encoder", "load_encoder_weights", "read_encoder_state", "save_encoder_weights", "ContextualCell",
           "EncDecNet", "plan_network", "ENCDEC", "EncDecSpace"]
