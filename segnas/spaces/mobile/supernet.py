"""The ``mobile`` space's weight-sharing supernet: every member of a ``MobileSpace`` runs on one set of
weights (once-for-all style elastic depth, expansion, kernel, dilation and width), trained by the
one-shot engine's sandwich rule and scored by the weight-sharing evaluator.

Each position of the network holds the module of its widest choice, of the same classes as the
plain network (``segnas.nn.blocks``): a stem layer holds one module per kind (``conv`` and
``dsconv`` share nothing), each stage slot as many inverted-residual blocks as its deepest choice,
built with the largest expansion and kernel. A member runs on slices of them:

- *width*: the leading output channels of every convolution and BatchNorm (a block's hidden width
  is its input width × its expansion, the leading channels of the widest hidden layer); the
  pyramid pooling's fusion conv takes the input columns of the branches that exist;
- *kernel*: a 3×3 depthwise filter is the centre of the 5×5 one (BigNAS; once-for-all adds a learned
  transformation of the centre, not done here);
- *dilation*: the same filter, dilated;
- *depth*: a slot runs its first ``depth`` blocks; an empty slot is skipped;
- *context*: the pyramid pooling runs or is skipped.

Modes (``set_width_mode``, the engine's names): ``max`` and ``min`` run the largest and the smallest
member (the last and first choice of every decision: choices are listed in cost order), ``random``
a member drawn uniformly on every forward pass (from torch's generator, which the engine checkpoints),
``argmax`` the member given to ``select``. ``subnet(arch)`` returns that member as a plain
``MobileNet`` carrying its slices of the weights: in eval mode it computes exactly what the supernet
computes for ``arch`` (``tests/test_mobile_supernet.py``). There are no architecture parameters:
the space is searched by sampling (``segnas search supernet``), not by gradient.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.blocks import (ConvBNReLU, DepthwiseSeparableConv, FeatureFusion, InvertedResidual, PyramidPooling,
                              SegHead, adaptive_avg_pool2d)
from segnas.nn.ops import Upsample
from segnas.nn.segnet import SegmentationNet
from segnas.nn.slimmable import sliced_bn, sliced_conv, sliced_conv_weight
from segnas.spaces.mobile.arch import HIGH_STRIDE, Block, MobileArch, Stage
from segnas.spaces.mobile.network import HEAD_DROPOUT, MobileNet

MODES = ("max", "min", "random", "argmax")


def unit(m: ConvBNReLU, x: torch.Tensor, cout: int | None = None, kernel: int | None = None,
         dilation: int | None = None, in_index: torch.Tensor | None = None) -> torch.Tensor:
    """A ``ConvBNReLU`` on slices of its weights (``segnas.nn.slimmable.sliced_conv``)."""
    out = sliced_bn(m[1], sliced_conv(m[0], x, cout, kernel, dilation, in_index))
    return F.relu(out) if len(m) > 2 else out


def copy_conv(dst: nn.Conv2d, src: nn.Conv2d, in_index: torch.Tensor | None = None) -> None:
    """Copy into ``dst`` (a plain convolution of a member) its slices of ``src``'s weights."""
    cin = dst.in_channels if dst.groups == 1 else dst.out_channels
    weight, bias = sliced_conv_weight(src, dst.out_channels, cin, dst.kernel_size[0], in_index)
    dst.weight.copy_(weight)
    if bias is not None:
        dst.bias.copy_(bias)


def copy_unit(dst: ConvBNReLU, src: ConvBNReLU, in_index: torch.Tensor | None = None) -> None:
    """Copy into ``dst`` (a plain ``ConvBNReLU`` of a member) its slices of ``src``'s weights and statistics."""
    copy_conv(dst[0], src[0], in_index)
    bn, c = dst[1], dst[1].num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).copy_(getattr(src[1], name)[:c])
    bn.num_batches_tracked.copy_(src[1].num_batches_tracked)


class MobileSupernet(SegmentationNet):
    """The supernet of ``space`` (a ``MobileSpace``) with a ``num_classes`` classifier (module docstring).
    ``input_size`` is the deployment size (kept for the latency model's keys)."""

    num_archs = 1
    width_search = (True,)
    #: Searched by sampling members, not by gradient: no architecture parameters, no ``gumbel`` mode.
    differentiable = False

    def __init__(self, space: Any, num_classes: int, input_size: tuple[int, int]) -> None:
        super().__init__(num_classes)
        self.space = space
        self.input_size = tuple(int(v) for v in input_size)
        self.stride_multiple = space.stage_strides[-1]
        self.largest = space.from_decisions([len(d.choices) - 1 for d in space.decisions])
        self.smallest = space.from_decisions([0] * len(space.decisions))
        widths = space.stem_widths
        self.stem = nn.ModuleList([ConvBNReLU(3, widths[0][-1], 3, 2)])
        for i in (1, 2):
            cin, cout = widths[i - 1][-1], widths[i][-1]
            self.stem.append(nn.ModuleDict({op: ConvBNReLU(cin, cout, 3, 2) if op == "conv"
                                            else DepthwiseSeparableConv(cin, cout, 2) for op in space.stem_ops}))
        expansion, kernel = max(space.expansions), max(space.kernels)
        self.slots = nn.ModuleList()
        widest_before = widths[2][-1]  # the widest input a slot's first block can get
        for s, (_, most) in enumerate(space.stage_depths):
            width = space.stage_widths[s][-1]
            stride = 2 if space.strided(s) else 1
            self.slots.append(nn.ModuleList(
                InvertedResidual(widest_before if b == 0 else width, width, stride if b == 0 else 1, expansion,
                                 kernel) for b in range(most)))
            widest_before = max(widest_before, width)
        eights = [w for s, w in enumerate(space.stage_widths) if space.stage_strides[s] == HIGH_STRIDE]
        high = max([widths[2][-1], *(w[-1] for w in eights)])
        last = [s for s in range(len(space.stage_strides)) if space.stage_strides[s] == space.stage_strides[-1]]
        low = max(space.stage_widths[s][-1] for s in last)
        fused = space.fusion_widths[-1]
        self.context = PyramidPooling(low, low) if "ppm" in space.contexts else None
        self.fusion = FeatureFusion(high, low, fused)
        self.head = nn.ModuleList(DepthwiseSeparableConv(fused, fused) for _ in range(max(space.head_depths)))
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.classifier = nn.Conv2d(fused, num_classes, 1)
        self.out = Upsample(HIGH_STRIDE, align_corners=False)
        self.aux_head = SegHead(high, num_classes, mid=max(1, high // 2))
        self.width_mode = "max"
        self.selected: MobileArch | None = None
        self.active: MobileArch = self.largest

    # ------------------------------------------------------------------ engine contract
    def _check(self, arch_index: int) -> None:
        if arch_index != 0:
            raise SegnasError(f"mobile supernet: arch_index {arch_index} outside 0..0 (one architecture)")

    def arch_parameters(self, arch_index: int = 0) -> list[nn.Parameter]:
        self._check(arch_index)
        return []

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        return self.parameters()

    def set_width_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise SegnasError(f"mobile supernet: mode {mode!r} not supported (expected {', '.join(MODES)}); "
                              "the space is searched by sampling, not by gradient")
        if mode == "argmax" and self.selected is None:
            raise SegnasError("mobile supernet: select() an architecture before the argmax mode")
        self.width_mode = mode

    def select(self, arch: MobileArch) -> None:
        """Run ``arch`` in the ``argmax`` mode (SegnasError naming the field when outside the space)."""
        self.space.to_decisions(arch)
        self.selected = arch

    def draw(self) -> MobileArch:
        """A member drawn uniformly (every decision independently), from torch's generator."""
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        return self.space.sample(np.random.default_rng(seed))

    def current(self) -> MobileArch:
        """The member the next forward pass runs (a new draw in the ``random`` mode)."""
        mode = self.width_mode
        if mode == "random":
            return self.draw()
        return {"max": self.largest, "min": self.smallest}.get(mode) or self.selected

    def expected_latency(self, arch_index: int, latency: Any) -> torch.Tensor:
        """The latency (ms) the operator table gives the member the current mode runs (the ``random``
        mode: a draw): its operators' entries and the runtime's call overhead. A constant: nothing
        here is differentiable."""
        self._check(arch_index)
        keys = self.space.latency_keys(self.current(), self.num_classes, self.input_size)
        return torch.tensor(float(sum(latency.op_latencies(keys)) + latency.call_overhead()))

    def forward(self, x: torch.Tensor, arch_index: int = 0) -> Any:
        self._check(arch_index)
        self.active = self.current()
        return super().forward(x)

    # ------------------------------------------------------------------ the member's computation
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        arch = self.active
        x = unit(self.stem[0], x, arch.stem[0].width)
        for i in (1, 2):
            layer = arch.stem[i]
            m = self.stem[i][layer.op]
            x = unit(m, x, layer.width) if layer.op == "conv" else unit(m[1], unit(m[0], x), layer.width)
        high = x
        for s, stage in self._slots(arch):
            for b, block in enumerate(stage.blocks):
                x = self._block(self.slots[s][b], x, stage.width, block)
                if stage.stride == HIGH_STRIDE:
                    high = x
        if arch.context == "ppm":
            x = self._ppm(x)
        f = self.fusion
        low = F.interpolate(x, size=high.shape[-2:], mode="bilinear", align_corners=False)
        fused = arch.fusion_width
        x = F.relu(unit(f.high_proj, high, fused) + unit(f.low_proj, unit(f.low_dw, low), fused))
        for i in range(arch.head_depth):
            x = unit(self.head[i][1], unit(self.head[i][0], x), fused)
        out = sliced_conv(self.classifier, self.dropout(x))
        aux = []
        if self.training:
            head = self.aux_head
            mid = unit(head[0], high, max(1, high.shape[1] // 2))
            aux.append(sliced_conv(head[2], head[1](mid)))
        return out, aux

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.out(main)

    def _slots(self, arch: MobileArch) -> list[tuple[int, Stage]]:
        """(slot index, stage) of every stage of ``arch``."""
        return [(s, stage) for s, stage in enumerate(self.space.slots_of(arch)) if stage is not None]

    @staticmethod
    def _block(m: InvertedResidual, x: torch.Tensor, width: int, block: Block) -> torch.Tensor:
        expand, depthwise, project = m.block
        out = unit(expand, x, x.shape[1] * block.expansion)
        out = unit(depthwise, out, kernel=block.kernel, dilation=block.dilation)
        out = unit(project, out, width)
        residual = depthwise[0].stride[0] == 1 and x.shape[1] == width
        return x + out if residual else out

    def _ppm_columns(self, c: int) -> torch.Tensor:
        """Input columns of the pyramid pooling's fusion conv for ``c`` input channels: the input's
        first ``c`` and each branch's first ``c // bins``."""
        m = self.context
        widest, inter = m.project[0].in_channels - len(m.bins) * m.stages[0][0].out_channels, m.stages[0][0].out_channels
        cols = [torch.arange(c)] + [widest + k * inter + torch.arange(c // len(m.bins)) for k in range(len(m.bins))]
        return torch.cat(cols)

    def _ppm(self, x: torch.Tensor) -> torch.Tensor:
        m, c = self.context, x.shape[1]
        feats = [x]
        for b, stage in zip(m.bins, m.stages):
            pooled = unit(stage, adaptive_avg_pool2d(x, b), c // len(m.bins))
            feats.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return unit(m.project, torch.cat(feats, 1), c, in_index=self._ppm_columns(c))

    # ------------------------------------------------------------------ the member as a plain network
    @torch.no_grad()
    def subnet(self, arch: MobileArch) -> MobileNet:
        """``arch`` as a plain ``MobileNet`` holding its slices of the supernet's weights (BatchNorm
        statistics included: re-estimate them for the member before trusting its eval mode)."""
        self.space.to_decisions(arch)
        net = MobileNet(arch, self.num_classes)
        net.train(self.training)
        for i, layer in enumerate(arch.stem):
            src = self.stem[0] if i == 0 else self.stem[i][layer.op]
            pairs = [(net.downsample[i], src)] if layer.op == "conv" else list(zip(net.downsample[i], src))
            for d, s in pairs:
                copy_unit(d, s)
        plain = [m for m in net.modules() if isinstance(m, InvertedResidual)]
        shared = [self.slots[s][b] for s, stage in self._slots(arch) for b in range(len(stage.blocks))]
        for d, s in zip(plain, shared):
            for du, su in zip(d.block, s.block):
                copy_unit(du, su)
        if arch.context == "ppm":
            ppm = net.global_features[-1]
            for d, s in zip(ppm.stages, self.context.stages):
                copy_unit(d, s)
            copy_unit(ppm.project, self.context.project, self._ppm_columns(arch.low_width))
        for name in ("low_dw", "low_proj", "high_proj"):
            copy_unit(getattr(net.fusion, name), getattr(self.fusion, name))
        for i in range(arch.head_depth):
            for d, s in zip(net.classifier[i], self.head[i]):
                copy_unit(d, s)
        copy_conv(net.classifier[-1], self.classifier)
        copy_unit(net.aux_heads[0][0], self.aux_head[0])
        copy_conv(net.aux_heads[0][2], self.aux_head[2])
        return net
