"""The ``joint`` search space: SSR's encoder with every slot choosing operator, dilation, resolution,
depth and widths jointly, and a fixed light decoder.

Network: two ERFNet downsamplers (3 → ``stem_channels`` → C₁, to 1/4), then stages; stage s works at
1/2^(s+2) with C_s channels and starts (for s > 0) with a downsampler from C_(s−1). Every stage
holds searchable *slots*; a slot is ``skip`` (the depth choice: no block) or one factorized
residual block (``segnas.nn.factorized``): ``fact`` (ERFNet non-bottleneck-1D) or the cheaper
``dwfact``, with a dilation, a resolution (``half``: pool → block → upsample) and two widths,
``mid`` and ``out`` (channels, chosen from ``width_ratios`` of C_s).

Decoder (fixed; the released SSR code searched the encoder only): each stage's output goes
through a 1×1 conv-BN-ReLU to ``decoder_width``; from the deepest stage up, the running feature is
upsampled ×2 and added to the next shallower one; a head (3×3 conv-BN-ReLU + 1×1 classifier)
predicts at 1/4 and the logits are upsampled ×4. It is cheap, exports to ONNX and gives the fine
1/4 features a direct path to the classifier.

Every piece is an ``OpKey`` of ``segnas.nn.ops``: the latency table, the derived network and the
SSR supernet (``segnas.spaces.joint.supernet``) build from the same factories.

Modules: ``arch`` (``JointArch``, ``Slot``, validation), ``network`` (the pieces, ``JointNet``,
``JointDecoder``), ``space`` (``JointSpace``, registered as ``"joint"``, ``Candidate``, ``JOINT``)
and ``supernet`` (SSR's supernet).
"""

from segnas.spaces.joint.arch import BLOCK_OPS, DEFAULT_WIDTH_RATIOS, VERSION, JointArch, Slot
from segnas.spaces.joint.network import (JointDecoder, JointNet, block_template, decoder_pieces, down_piece,
                                         plan_network, stem_pieces)
from segnas.spaces.joint.space import JOINT, Candidate, JointSpace

__all__ = ["BLOCK_OPS", "DEFAULT_WIDTH_RATIOS", "VERSION", "JointArch", "Slot", "JointDecoder", "JointNet",
           "block_template", "decoder_pieces", "down_piece", "plan_network", "stem_pieces", "JOINT", "Candidate",
           "JointSpace"]
