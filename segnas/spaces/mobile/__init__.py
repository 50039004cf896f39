"""The ``mobile`` search space: Fast-SCNN / MobileNetV2-style real-time segmenters, a family in which
Fast-SCNN itself is one member (``MOBILE_FAST_SCNN``).

Network (``network.MobileNet``), with the default ranges (``space.MobileSpace``):

- *learning to downsample*: three 3×3 stride-2 layers to 1/8; the first a conv-BN-ReLU of width
  16/24/32, the second and third each a standard conv or a depthwise-separable conv (``dsconv``) of
  width 24/32/48 and 32/48/64;
- *inverted-residual stages* (MobileNetV2 bottlenecks: 1×1 expand, k×k depthwise, 1×1 linear
  project, residual when the shape is kept) in five slots: 1/8 with 0–2 blocks, width 32/48/64;
  1/16 with 1–4 blocks, width 32/48/64/96, then 0–3 blocks, width 64/96/128; 1/32 with 1–4 blocks,
  width 48/72/96/128, then 0–3 blocks, width 64/96/128/160. The first block of the first slot at a
  new stride has stride 2. Every block chooses its expansion (2, 3, 4, 6), kernel (3, 5) and
  dilation (1, 2; 1 when strided); widths are per slot (residuals need equal widths);
- *global context* on the 1/32 features: pyramid pooling (bins 1, 2, 3, 6) or none;
- *fusion* (Fast-SCNN's): the 1/8 branch (stem + 1/8 blocks) through a linear 1×1 conv, plus the
  1/32 branch upsampled, through a depthwise 3×3 conv and a linear 1×1 conv; width 64/96/128/160;
- *classifier*: 0–2 depthwise-separable convs at the fusion width, a 1×1 conv to the classes; the
  logits upsampled ×8. A training-only auxiliary head on the 1/8 branch, as Fast-SCNN's.

The space encodes every member as a fixed-length sequence of categorical decisions
(``decision_sizes`` / ``to_decisions`` / ``from_decisions``, the ``DecisionSpace`` protocol), on
which sampling and mutation work. Every piece is an ``OpKey`` of ``segnas.nn.ops``
(``inverted_residual``, ``sep_conv``, ``conv_bn_relu``, ``pyramid_pooling``, ``dw_conv``,
``conv_bn``, ``classifier``, ``upsample``), so the latency table measures the operators the network
runs. Its weight-sharing supernet (``supernet.MobileSupernet``: once-for-all style elastic depth,
expansion, kernel, dilation and width) is searched by sampling (``segnas search supernet``); the
sample-based methods (``random``, ``saswot``) work on the space directly (``rl``'s child evaluator
trains ``encdec`` children only).

Modules: ``arch`` (``MobileArch``, ``StemLayer``, ``Stage``, ``Block``, ``fast_scnn``), ``network``
(``plan_network``, ``MobileNet``), ``space`` (``MobileSpace``, registered as ``"mobile"``,
``MOBILE``, ``MOBILE_FAST_SCNN``), ``supernet`` (``MobileSupernet``).
"""

from segnas.spaces.mobile.arch import CONTEXTS, STEM_OPS, VERSION, Block, MobileArch, Stage, StemLayer, fast_scnn
from segnas.spaces.mobile.network import MobileNet, plan_network
from segnas.spaces.mobile.space import MOBILE, MOBILE_FAST_SCNN, Decision, MobileSpace
from segnas.spaces.mobile.supernet import MobileSupernet

__all__ = ["CONTEXTS", "STEM_OPS", "VERSION", "Block", "MobileArch", "Stage", "StemLayer", "fast_scnn", "MobileNet",
           "plan_network", "MOBILE", "MOBILE_FAST_SCNN", "Decision", "MobileSpace", "MobileSupernet"]
