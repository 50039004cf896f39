import pytest
import torch

from segnas.data.transforms import BatchCrop, RandomCrop, eval_transforms, train_transforms
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
    seen = set()
    for _ in range(20):
        img, m = tf(image, mask)
        flipped = bool(m[0, 0] == 3)
        seen.add(flipped)
        ref = image.flip(-1) if flipped else image
        assert torch.allclose(img, eval_transforms()(ref, mask)[0])
    assert seen == {True, False}  # both paths were taken


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
    bad = TrainConfig.model_validate(tiny_cfg(**{"data.focus_classes": ["nope"], "data.focus_prob": 0.5}))
    with pytest.raises(SegnasError, match="data.focus_classes: 'nope' is not a class of the dataset"):
        make_datasets(bad)


@pytest.mark.parametrize("data,named", [
    ({"focus_classes": ["pole"]}, "focus_prob"),  # classes, but no crop placed on them
    ({"focus_prob": 0.5}, "focus_classes"),  # a share of crops, but no classes
    ({"focus_classes": ["pole"], "focus_prob": 0.5, "crop_size": None}, "need data.crop_size"),  # no crops at all
])
def test_focus_crop_settings_that_would_do_nothing_are_refused(tiny_cfg, data, named):
    from pydantic import ValidationError

    from segnas.config import TrainConfig

    with pytest.raises(ValidationError, match=named):
        TrainConfig.model_validate(tiny_cfg(**{f"data.{k}": v for k, v in data.items()}))


def test_gaussian_blur_is_the_2d_gaussian_of_its_definition_and_keeps_the_mask():
    from segnas.data.transforms import RandomBlur, gaussian_blur

    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0))
    sigma, r = 1.2, 4  # radius round(3 sigma)
    blurred = gaussian_blur(image, sigma)
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    kernel = torch.exp(-(xs ** 2 + ys ** 2) / (2 * sigma ** 2))
    kernel /= kernel.sum()
    y, x = 10, 12  # an interior pixel: no edge padding involved
    expected = (image[:, y - r:y + r + 1, x - r:x + r + 1] * kernel).sum(dim=(1, 2))
    torch.testing.assert_close(blurred[:, y, x], expected, rtol=1e-5, atol=1e-6)
    flat = torch.full((3, 9, 9), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)  # edges replicated: a flat image stays flat
    mask = torch.randint(0, 5, (20, 24))
    out, out_mask = RandomBlur(p=1.0)(image, mask)
    assert out.shape == image.shape and torch.equal(out_mask, mask) and not torch.equal(out, image)
    assert RandomBlur(p=0.0)(image, mask)[0] is image


def test_gaussian_noise_stays_in_range_and_its_strength_is_bounded():
    from segnas.data.transforms import GaussianNoise

    torch.manual_seed(0)
    image = torch.full((3, 64, 64), 0.5)
    deviations = [(GaussianNoise(0.05)(image.clone(), None)[0] - 0.5).std().item() for _ in range(40)]
    assert max(deviations) <= 0.05 * 1.1 and min(deviations) < 0.02 < max(deviations)
    noisy = GaussianNoise(0.5)(torch.rand(3, 16, 16), None)[0]
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0


def test_blur_and_noise_join_the_training_augmentation_when_asked():
    names = [type(t).__name__ for t in train_transforms((8, 8), blur_prob=0.2, noise_std=0.03).transforms]
    assert names[-3:] == ["RandomBlur", "GaussianNoise", "Normalize"]
    assert "RandomBlur" not in [type(t).__name__ for t in train_transforms((8, 8)).transforms]


def test_batch_crop_draws_one_size_per_batch_and_a_place_per_sample():
    """Every sample of a batch is cut to the same drawn fraction of its sides (a multiple of 32),
    each at its own place: its pixels are a window of the sample."""
    torch.manual_seed(0)
    height, width = 96, 128
    image = torch.arange(height * width, dtype=torch.float32).view(1, height, width).expand(3, -1, -1)
    mask = torch.arange(height * width).view(height, width)
    crop = BatchCrop([1.0, 0.5])
    sizes, tops = set(), set()
    for _ in range(20):
        images, masks = crop([(image, mask)] * 4)
        sizes.add(tuple(images.shape[-2:]))
        assert images.shape[-2:] == masks.shape[-2:] and images.shape[:2] == (4, 3)
        for img, m in zip(images, masks):
            top, left = divmod(int(m[0, 0]), width)
            h, w = m.shape
            assert torch.equal(m, mask[top:top + h, left:left + w]) and torch.equal(img[0], image[0, top:top + h, left:left + w])
            tops.add(top)
    assert sizes == {(96, 128), (32, 64)}  # 0.5 x 96 = 48 -> 32; 0.5 x 128 = 64
    assert len(tops) > 2


def test_batch_crop_of_whole_samples_draws_no_random_numbers():
    samples = [(torch.rand(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))] * 2
    torch.manual_seed(5)
    state = torch.get_rng_state()
    images, masks = BatchCrop([1.0])(samples)
    assert images.shape == (2, 3, 8, 8) and masks.shape == (2, 8, 8)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.2])
def test_crop_fractions_outside_zero_one_are_refused_naming_the_setting(fraction):
    from segnas.config.train import DataConfig
    with pytest.raises(ValueError, match="crop_fractions"):
        DataConfig(crop_size=(64, 64), crop_fractions=[1.0, fraction])
    with pytest.raises(ValueError, match="crop_fractions.*crop_size"):
        DataConfig(crop_fractions=[0.5])
