"""The embedded proxy's data: augmentation drawn per (seed, epoch, image), so resuming and
DataLoader workers see the same images; the warp is torchvision's affine; one protocol per sweep."""
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import ndimage
from torch.utils.data import DataLoader, Subset

from gnrepro.data import build_datasets, set_epoch
from gnrepro.resources import CONFIGS

AUG = {"rotate": 15, "scale": 0.15, "shear": 10, "translate": 1, "noise": 0.2, "contrast": 1, "brightness": 0}
OFF = {**{k: 0 for k in AUG}, "contrast": 1}  # every magnitude at its no-op value (a gain range of 1 is no jitter)


def digits_cfg(augment=AUG, **kw):
    return OmegaConf.create({"name": "digits", "image_size": 10, "val_fraction": 0.2, "split_seed": 0,
                             "small_input": True, "epochs": 1, "num_workers": 0, "subset": None,
                             "augment": augment, **kw})


def images(dataset, idx):
    return torch.stack([dataset[i][0] for i in idx])


def test_augmentation_is_a_function_of_seed_epoch_and_image():
    train = build_datasets(digits_cfg(), seed=3).train
    idx = [0, 5, 700]
    first = images(train, idx)
    assert torch.equal(images(train, idx[::-1]), first.flip(0)), "the order images are drawn in must not matter"
    set_epoch(train, 2)
    second = images(train, idx)
    set_epoch(train, 1)
    assert torch.equal(images(train, idx), first), "epoch 1 again gives epoch 1's images"
    assert not torch.equal(second, first), "each epoch draws new views"
    other_seed = build_datasets(digits_cfg(), seed=4).train
    assert not torch.equal(images(other_seed, idx), first), "each seed draws its own views"


def test_dataloader_workers_and_subsets_see_the_same_augmentation():
    splits = build_datasets(digits_cfg(), seed=0)
    train = Subset(splits.train, list(range(0, 40, 2)))
    set_epoch(train, 3)  # reaches through the Subset
    in_process = torch.cat([x for x, _ in DataLoader(train, batch_size=8)])
    with_workers = torch.cat([x for x, _ in DataLoader(train, batch_size=8, num_workers=2)])
    assert torch.equal(in_process, with_workers)


def test_zero_magnitudes_leave_the_unaugmented_images():
    plain = build_datasets(digits_cfg(augment=None), seed=0)
    still = build_datasets(digits_cfg(augment=OFF), seed=0)
    idx = list(range(0, 1437, 97))
    torch.testing.assert_close(images(still.train, idx), images(plain.train, idx), rtol=0, atol=1e-5)
    assert torch.equal(still.val.tensors[0], plain.val.tensors[0]), "validation images are never augmented"


def test_a_pure_rotation_matches_an_independent_rotation():
    """Rotation only (no noise): the warped digit equals scipy's rotation of the same image about
    its centre, away from the border where the two fill differently."""
    cfg = digits_cfg(augment={**OFF, "rotate": 15})
    aug = build_datasets(cfg, seed=0).train
    plain = build_datasets(digits_cfg(augment=None), seed=0).train
    index = 11
    u = torch.rand(5, generator=aug.generator(index)) * 2 - 1
    angle = float(u[0]) * 15
    raw = (plain[index][0][0] * aug.std + aug.mean).numpy().astype(np.float64)
    # scipy's angle runs the other way round in array coordinates; both rotate about the centre.
    ref = ndimage.rotate(raw, -angle, reshape=False, order=1, mode="constant", cval=0.0)
    got = (aug[index][0][0] * aug.std + aug.mean).numpy()
    inner = (slice(2, 8), slice(2, 8))
    assert abs(angle) > 1 and np.abs(got[inner] - ref[inner]).max() < 1e-5


@pytest.mark.parametrize("key,value,expected", [
    ("rotate", -1, "a finite number >= 0"), ("noise", "nan", "a finite number >= 0"),
    ("scale", 1.0, "a finite number in [0, 1)"), ("shear", "true", "a finite number >= 0"),
    ("contrast", 0.5, "a finite number >= 1"), ("brightness", -0.1, "a finite number >= 0"),
])
def test_bad_magnitudes_are_refused_by_the_schema(compose_cfg, key, value, expected):
    from gnrepro.settings.validate import validate
    from gnrepro.errors import ConfigError

    cfg = compose_cfg("experiment=fig1_batch_size_proxy", f"data.augment.{key}={value}")
    with pytest.raises(ConfigError, match=re.escape(f"data.augment.{key} must be {expected}")):
        validate(cfg)


def test_augment_keys_are_the_schemas():
    from gnrepro.settings.schema import Augment

    assert set(OmegaConf.load(CONFIGS / "proxy" / "digits.yaml").data.augment) == set(Augment.model_fields)


def test_augmented_val_copies_are_one_fixed_draw_for_every_run():
    clean = build_datasets(digits_cfg(), seed=0).val.tensors
    a = build_datasets(digits_cfg(augment_val=3), seed=0).val.tensors
    b = build_datasets(digits_cfg(augment_val=3), seed=5).val.tensors  # another run's seed: the same val images
    n = len(clean[1])
    assert a[0].shape == (3 * n, *clean[0].shape[1:]) and torch.equal(a[1], clean[1].repeat(3))
    assert torch.equal(a[0], b[0]), "every run must be scored on the same images"
    assert not torch.equal(a[0][:n], a[0][n:2 * n]), "each copy is its own draw"
    assert (a[0][:n] - clean[0]).abs().mean() > 0.1, "the copies are warped and noised"


def test_augmented_val_needs_the_augmentation(compose_cfg):
    from gnrepro.settings.validate import validate
    from gnrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="data.augment_val=2 draws val copies .* but data.augment is null"):
        validate(compose_cfg("data.augment_val=2"))
    validate(compose_cfg("experiment=fig1_batch_size_proxy", "data.augment_val=2"))


def test_exposure_jitter_is_a_per_image_gain_and_offset_of_the_ink():
    """contrast/brightness: each image's ink is scaled by a gain log-uniform in [1/c, c] and shifted
    by an offset uniform in [-b, b], before standardization; checked in float64 against the
    unjittered warp of the same image with the same draws."""
    exposure = {**OFF, "rotate": 15, "contrast": 3, "brightness": 0.3}
    warp_only = {**exposure, "contrast": 1, "brightness": 0}
    jit = build_datasets(digits_cfg(augment=exposure), seed=2).train
    ref = build_datasets(digits_cfg(augment=warp_only), seed=2).train
    gains, offsets = [], []
    for index in (0, 9, 400, 1000):
        g = jit.generator(index)
        torch.rand(5, generator=g)  # the warp's draws come first
        v = torch.rand(2, generator=g, dtype=torch.float32).double() * 2 - 1
        gain, offset = 3.0 ** float(v[0]), float(v[1]) * 0.3
        ink = ref[index][0].double() * ref.std + ref.mean
        expected = (ink * gain + offset - jit.mean) / jit.std
        torch.testing.assert_close(jit[index][0].double(), expected, rtol=0, atol=1e-5)
        gains.append(gain), offsets.append(offset)
    assert min(gains) < 1 < max(gains) and all(1 / 3 <= x <= 3 for x in gains)
    assert all(abs(o) <= 0.3 for o in offsets) and len(set(offsets)) == len(offsets)


def test_without_exposure_jitter_the_draws_are_the_earlier_protocols():
    """contrast=1, brightness=0 draws nothing more: the warp and the noise of every image are the
    ones runs made before the keys existed drew (their records stay reproducible)."""
    train = build_datasets(digits_cfg(), seed=1).train
    quiet = build_datasets(digits_cfg(augment={**AUG, "noise": 0}), seed=1).train
    for index in (3, 77):
        g = train.generator(index)
        torch.rand(5, generator=g)
        noise = torch.randn((1, 10, 10), generator=g)  # drawn right after the warp, as before
        torch.testing.assert_close(train[index][0], quiet[index][0] + 0.2 * noise, rtol=0, atol=1e-6)
