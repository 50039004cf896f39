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


def test_class_focused_crops_hold_a_focus_pixel_and_cost_nothing_when_off():
    from segnas.data.transforms import RandomCrop

    image, mask = torch.rand(3, 40, 60), torch.zeros(40, 60, dtype=torch.long)
    mask[33, 5] = 3  # one pixel of a rare class near a corner
    focused = RandomCrop((10, 12), focus_classes=(3, 4), focus_prob=1.0)
    torch.manual_seed(0)
    assert all(bool((focused(image, mask)[1] == 3).any()) for _ in range(50))
    plain_hits = 0
    torch.manual_seed(0)
    for _ in range(50):
        plain_hits += bool((RandomCrop((10, 12))(image, mask)[1] == 3).any())
    assert plain_hits < 25  # a uniform crop seldom holds it
    # off (prob 0 or no classes): the same random numbers, the same crops as a plain crop
    for off in (RandomCrop((10, 12), (3,), 0.0), RandomCrop((10, 12), (), 1.0)):
        torch.manual_seed(5)
        a = [off(image, mask)[0] for _ in range(5)]
        torch.manual_seed(5)
        b = [RandomCrop((10, 12))(image, mask)[0] for _ in range(5)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # no focus class in the image: a plain random crop
    assert RandomCrop((10, 12), (7,), 1.0)(image, mask)[0].shape == (3, 10, 12)


def test_focus_classes_by_name_and_bad_names_named(tiny_cfg):
    from segnas.config import TrainConfig
    from segnas.errors import SegnasError
    from segnas.training.job import make_datasets

    cfg = TrainConfig.model_validate(tiny_cfg(**{"data.focus_classes": ["pole", 2], "data.focus_prob": 0.5}))
    train, _ = make_datasets(cfg)
    crop = next(t for t in train.transform.transforms if type(t).__name__ == "RandomCrop")
    assert crop.focus_classes[1] == 2 and train.classes.names[crop.focus_classes[0]].lower() == "pole"
    assert crop.focus_prob == 0.5
    bad = TrainConfig.model_validate(tiny_cfg(**{"data.focus_classes": ["nope"]}))
    with pytest.raises(SegnasError, match="data.focus_classes: 'nope' is not a class of the dataset"):
        make_datasets(bad)
