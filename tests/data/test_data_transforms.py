"""The transforms are the paper's (Sec. 4.1; docs/PROTOCOL.md): RandomResizedCrop 224 + horizontal flip
for training; shorter side to 256 + center crop 224 for evaluation; ImageNet mean/std."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from conftest import data_config
from gnrepro.data.images import cifar_transforms, imagenet_transforms

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def load(name):
    return data_config(name)


def parts(compose):
    return {type(t).__name__: t for t in compose.transforms}


@pytest.mark.parametrize("name", ["imagenet", "pets", "imagenette"])
def test_train_and_eval_transforms_are_the_papers(name):
    cfg = load(name)
    assert (cfg.train_crop, cfg.eval_resize, cfg.eval_crop) == (224, 256, 224)
    assert list(cfg.mean) == IMAGENET_MEAN and list(cfg.std) == IMAGENET_STD
    train, val = imagenet_transforms(cfg)
    assert [type(t).__name__ for t in train.transforms] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "ToImage", "ToDtype", "Normalize"]
    t = parts(train)
    assert list(t["RandomResizedCrop"].size) == [224, 224]
    assert t["RandomResizedCrop"].scale == (0.08, 1.0)
    assert t["RandomResizedCrop"].ratio == pytest.approx((3 / 4, 4 / 3))
    assert t["RandomHorizontalFlip"].p == 0.5
    assert list(t["Normalize"].mean) == IMAGENET_MEAN and list(t["Normalize"].std) == IMAGENET_STD
    assert [type(t).__name__ for t in val.transforms] == ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"]
    v = parts(val)
    assert list(v["Resize"].size) == [256]  # one number: the shorter side
    assert list(v["CenterCrop"].size) == [224, 224]


def test_eval_is_shorter_side_256_then_the_center_224():
    """A 512x300 image: the shorter side (300) goes to 256, the longer to 436 (int(512*256/300)); the 224 crop is the center."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 512, 3), dtype=np.uint8))
    _, val = imagenet_transforms(load("imagenet"))
    out = val(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    resized = v2.functional.to_image(v2.functional.resize(image, [256], antialias=True))  # on PIL, as the pipeline does
    assert tuple(resized.shape[-2:]) == (256, 436)
    top, left = (256 - 224) // 2, (436 - 224) // 2
    crop = resized[:, top:top + 224, left:left + 224].float() / 255
    expected = (crop - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(out, expected, atol=1e-5)


# Flip probability, from counts of n = 400 independent draws: accept 160..240 flips. For the right p = 0.5,
# P(X outside [160, 240]) = 4.8e-5 (exact binomial tail, Bin(400, 0.5)); for a wrong p = 0.3 (or 0.7),
# P(X inside) = 1.3e-5. (The old check, 8..32 flips of 40, accepted any p from 0.2 to 0.8.) p = 0.4
# still passes about half the time: the window is the price of 400 draws, and 0.4 is not a variant
# anyone would write; 0.3 is the wrong variant the control below shows failing.
FLIP_DRAWS, FLIP_WINDOW = 400, (160, 240)


def count_flips(train, draws: int = FLIP_DRAWS) -> int:
    """Flips seen in ``draws`` passes of an image whose left half is black and right half white: a
    flip shows as a bright left edge (every RandomResizedCrop box of it keeps both halves' sides
    apart: its left column is never brighter than its right one unless flipped)."""
    pixels = np.zeros((240, 320, 3), dtype=np.uint8)
    pixels[:, 160:] = 255
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    flips = 0
    for _ in range(draws):
        out = train(image)
        assert out.shape == (3, 224, 224)
        flips += bool(out[:, :, 0].mean() > out[:, :, -1].mean())
    return flips


def test_train_crops_224_and_flips_half_the_time():
    train, _ = imagenet_transforms(load("imagenet"))
    lo, hi = FLIP_WINDOW
    assert lo <= count_flips(train) <= hi


def test_the_flip_check_rejects_a_flip_probability_of_0_3():
    """Negative control: the same pipeline with RandomHorizontalFlip(p=0.3) fails the same window."""
    train, _ = imagenet_transforms(load("imagenet"))
    wrong = v2.Compose([v2.RandomHorizontalFlip(p=0.3) if isinstance(t, v2.RandomHorizontalFlip) else t
                        for t in train.transforms])
    lo, hi = FLIP_WINDOW
    assert not lo <= count_flips(wrong) <= hi


def test_cifar_pad_crop_flip_and_plain_eval():
    for name in ("cifar10", "cifar100"):
        cfg = load(name)
        assert cfg.small_input and (cfg.train_crop, cfg.crop_padding) == (32, 4)
        train, val = cifar_transforms(cfg)
        assert [type(t).__name__ for t in train.transforms][:2] == ["RandomCrop", "RandomHorizontalFlip"]
        assert parts(train)["RandomCrop"].padding == [4, 4, 4, 4]
        assert [type(t).__name__ for t in val.transforms] == ["ToImage", "ToDtype", "Normalize"]
        image = Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
        assert train(image).shape == val(image).shape == (3, 32, 32)


@pytest.mark.parametrize("name,small", [("imagenet", False), ("pets", False), ("imagenette", False),
                                        ("cifar10", True), ("cifar100", True)])
def test_stem_matches_the_resolution(compose_cfg, name, small):
    cfg = compose_cfg(f"data={name}", "data.root=/data")
    assert cfg.model.small_input is small
    assert cfg.data.num_workers > 0 and cfg.data.pin_memory == "auto" and cfg.data.persistent_workers
