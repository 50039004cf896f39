"""Dynamic ONNX export (symbolic batch, H and W) of every zoo network and of networks of every
registered search space: the exported file must agree with PyTorch at the traced size and at
another batch and size that is not a multiple of the network's stride (issue 30)."""

from __future__ import annotations

import numpy as np
import pytest

from segnas.cost.export import check_parity, export_onnx
from segnas.spaces import get_space, list_spaces
from segnas.zoo import MODELS, build_model

TRACED = (1, 3, 64, 96)
OTHER = (2, 3, 77, 125)  # another batch; H, W not multiples of 32 (the traced size is)


def _networks():
    for name in sorted(MODELS):
        yield pytest.param(lambda name=name: build_model(name, 5), id=name)
    for space in list_spaces():
        yield pytest.param(lambda space=space: get_space(space).build(
            get_space(space).sample(np.random.default_rng(0), spread=True), 5), id=f"space-{space}")


@pytest.mark.slow
@pytest.mark.parametrize("make", list(_networks()))
def test_dynamic_onnx_export_agrees_at_two_sizes(make, tmp_path):
    model = make().eval()
    path = export_onnx(model, tmp_path / "m.onnx", TRACED, dynamic=True)
    for shape in (TRACED, OTHER):
        result = check_parity(model, path, shape, tolerance=1e-3)
        assert result.ok, (shape, result.max_abs_diff)


def test_padding_and_adaptive_pooling_follow_the_input_size_when_exported(tmp_path):
    """The two ops that fixed the traced size into dynamic exports: padding to the stride (skipped
    for the traced size, computed with a negative floor division) and adaptive pooling (averaging
    matrices built for the traced size)."""
    import torch
    from torch import nn

    from segnas.nn import adaptive_avg_pool2d
    from segnas.nn.segnet import pad_to_multiple

    class Net(nn.Module):
        def forward(self, x):
            return pad_to_multiple(x, 8) + adaptive_avg_pool2d(x, 3).mean((2, 3), keepdim=True)

    path = export_onnx(Net(), tmp_path / "p.onnx", (1, 3, 16, 24), dynamic=True)
    for shape in ((1, 3, 16, 24), (2, 3, 21, 30)):
        assert check_parity(Net(), path, shape, tolerance=1e-5).ok
    assert torch.equal(pad_to_multiple(torch.ones(1, 1, 16, 24), 8), torch.ones(1, 1, 16, 24))
