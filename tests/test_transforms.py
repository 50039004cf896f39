import pytest
import torch

from segnas.data.transforms import RandomCrop, eval_transforms, train_transforms
from segnas.zoo import build_model


@pytest.mark.parametrize("size", [(97, 131), (31, 33), (360, 480), (1, 5)])
def test_train_transforms_any_input_size(size):
    torch.manual_seed(0)
    image = torch.rand(3, *size)
    mask = torch.randint(0, 5, size)
    tf = train_transforms((64, 96), scale=(0.5, 2.0))
    for _ in range(5):
        img, m = tf(image, mask)
        assert img.shape == (3, 64, 96) and m.shape == (64, 96)
        assert m.dtype == torch.int64
        assert set(m.unique().tolist()) <= set(range(5)) | {255}


def test_crop_pads_mask_with_ignore():
    img, m = RandomCrop((10, 12))(torch.rand(3, 4, 5), torch.zeros(4, 5, dtype=torch.long))
    assert img.shape == (3, 10, 12)
    assert (m == 255).sum() == 10 * 12 - 4 * 5


def test_flip_is_applied_to_image_and_mask_together():
    torch.manual_seed(1)
    image = torch.arange(12.0).view(1, 3, 4).expand(3, 3, 4).clone() / 12
    mask = torch.arange(12).view(3, 4)
    tf = train_transforms(None, jitter=0.0)
    for _ in range(6):
        img, m = tf(image, mask)
        flipped = bool(m[0, 0] == 3)
        ref = image.flip(-1) if flipped else image
        assert torch.allclose(img, eval_transforms()(ref, mask)[0])


@pytest.mark.parametrize("size", [(97, 131), (45, 61), (64, 64)])
def test_network_accepts_sizes_not_divisible_by_32(size):
    model = build_model("fast_scnn", 7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 7, *size)
