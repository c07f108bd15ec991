"""Each on-disk layout, built as a tiny fake copy: class counts, split sizes, tensor shapes, and the
one-line errors for a missing root, empty class folders, the flat ImageNet val/ and a corrupt image."""
from pathlib import Path

import pytest
import torch

from conftest import data_config
from gnrepro.data import build_datasets, build_loaders, fake, limit_train
from gnrepro.data.base import BadImageError, DataError
from gnrepro.errors import UserError
from gnrepro.data.sampling import StepBatchSampler


MAKERS = {
    "imagenet": fake.make_imagenet,
    "pets": fake.make_pets,
    "imagenette": fake.make_imagenette,
    "cifar10": lambda root: fake.make_cifar(root, "cifar10"),
    "cifar100": lambda root: fake.make_cifar(root, "cifar100"),
}
# (classes, train images, val images) of the fake copies above
EXPECTED = {"imagenet": (3, 12, 6), "pets": (3, 9, 6), "imagenette": (10, 20, 10),
            "cifar10": (10, 20, 6), "cifar100": (100, 4, 6)}



def loaders(splits, cfg, images_per_step):
    """The trainer's loaders: subset applied, one step of ``images_per_step`` images per batch."""
    limit_train(splits, cfg, images_per_step)
    return build_loaders(splits, cfg, StepBatchSampler(len(splits.train), images_per_step, 1, seed=0), eval_batch=4)

def data_cfg(name, root, **overrides):
    """The shipped data config with a tiny crop (32 px) so the tests stay fast."""
    cfg = data_config(name, root)
    cfg.num_workers = 0
    if "eval_crop" in cfg:
        cfg.train_crop, cfg.eval_resize, cfg.eval_crop = 32, 36, 32
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_layout_counts_and_shapes(tmp_path, name):
    MAKERS[name](tmp_path)
    splits = build_datasets(data_cfg(name, tmp_path))
    classes, n_train, n_val = EXPECTED[name]
    assert (splits.num_classes, len(splits.train), len(splits.val), splits.in_channels) == (classes, n_train, n_val, 3)
    train, val = loaders(splits, data_cfg(name, tmp_path), 2)
    images, targets = next(iter(train))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert targets.dtype == torch.long and int(targets.max()) < classes
    images, targets = next(iter(val))
    assert images.shape == (4, 3, 32, 32)
    assert len(train) == n_train // 2  # the last partial step is dropped


def test_pets_accepts_the_oxford_iiit_pet_folder_itself(tmp_path):
    fake.make_pets(tmp_path)
    splits = build_datasets(data_cfg("pets", tmp_path / "oxford-iiit-pet"))
    assert len(splits.train) == 9 and splits.classes == ["Abyssinian", "American Bulldog", "Bengal"]


def test_subset_keeps_a_fixed_part_of_any_data_set(tmp_path):
    fake.make_imagenet(tmp_path)
    cfg = data_cfg("imagenet", tmp_path, subset=5)
    splits = build_datasets(cfg)
    train, _ = loaders(splits, cfg, 2)
    assert len(splits.train) == 5 and len(train) == 2


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_missing_root_is_one_line_naming_the_layout(tmp_path, name):
    with pytest.raises(DataError) as err:
        build_datasets(data_cfg(name, tmp_path / "nowhere"))
    text = one_line(err)
    assert str(tmp_path / "nowhere") in text and "does not exist" in text
    assert ("download" in text or "image-net.org" in text), text


def test_unset_root_says_to_set_it(compose_cfg):
    cfg = compose_cfg("data=imagenet")
    with pytest.raises(DataError, match="data=imagenet needs data.root=DIR") as err:
        build_datasets(cfg.data)
    one_line(err)


@pytest.mark.parametrize("name", ["pets", "imagenette", "cifar10", "cifar100"])
def test_root_without_the_data_set_names_what_is_missing(tmp_path, name):
    with pytest.raises(DataError) as err:
        build_datasets(data_cfg(name, tmp_path))  # exists, but empty
    text = one_line(err)
    assert "does not exist" in text and "data.download=true" in text


def test_imagenet_download_is_refused_with_the_manual_steps(tmp_path):
    with pytest.raises(DataError, match="cannot be downloaded automatically") as err:
        build_datasets(data_cfg("imagenet", tmp_path / "none", download=True))
    assert "image-net.org" in one_line(err)


def test_imagenet_flat_val_points_to_the_sort_script(tmp_path):
    fake.make_imagenet(tmp_path, flat_val=True)
    with pytest.raises(DataError) as err:
        build_datasets(data_cfg("imagenet", tmp_path))
    text = one_line(err)
    assert "flat layout" in text and "scripts/sort_imagenet_val.py" in text and "6 images" in text


def test_imagenet_half_sorted_val_is_refused(tmp_path):
    fake.make_imagenet(tmp_path)
    (tmp_path / "val" / "n01440764" / "ILSVRC2012_val_00000001.JPEG").rename(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="holds 1 images beside its class folders") as err:
        build_datasets(data_cfg("imagenet", tmp_path))
    assert "sort_imagenet_val.py" in one_line(err)


def test_empty_class_folder_is_one_line(tmp_path):
    fake.make_imagenet(tmp_path)
    (tmp_path / "train" / "n09999999").mkdir()
    (tmp_path / "val" / "n09999999").mkdir()
    with pytest.raises(DataError) as err:
        build_datasets(data_cfg("imagenet", tmp_path))
    text = one_line(err)
    assert "n09999999" in text and "at least one image" in text


def test_train_and_val_classes_must_match(tmp_path):
    fake.make_imagenet(tmp_path)
    for p in (tmp_path / "val" / "n01440764").iterdir():
        p.unlink()
    (tmp_path / "val" / "n01440764").rmdir()
    with pytest.raises(DataError, match="train/ has 3 class folders and val/ has 2") as err:
        build_datasets(data_cfg("imagenet", tmp_path))
    one_line(err)


def test_imagenette_foreign_class_folder(tmp_path):
    fake.make_imagenette(tmp_path, classes=2)
    bad = tmp_path / "imagenette2-320" / "train" / "n00000001"
    bad.mkdir()
    fake._image(bad / "x.JPEG", (40, 40), __import__("numpy").random.default_rng(0))
    with pytest.raises(DataError, match="'n00000001', not one of Imagenette's 10 wnids") as err:
        build_datasets(data_cfg("imagenette", tmp_path))
    one_line(err)


def test_pets_index_listing_missing_images(tmp_path):
    fake.make_pets(tmp_path)
    (tmp_path / "oxford-iiit-pet" / "images" / "Bengal_1.jpg").unlink()
    with pytest.raises(DataError, match="trainval.txt lists 1 images missing") as err:
        build_datasets(data_cfg("pets", tmp_path))
    assert "Bengal_1.jpg" in one_line(err)


def test_cifar_damaged_pickle_names_the_file(tmp_path):
    fake.make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3") as err:
        build_datasets(data_cfg("cifar10", tmp_path))
    assert "re-extract cifar-10-python.tar.gz" in one_line(err)


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])  # a truncated JPEG: the header survives, the data does not


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_names_the_file_even_from_a_worker_process(tmp_path, num_workers):
    fake.make_imagenet(tmp_path, classes=1, train_per_class=2, val_per_class=1)
    bad = tmp_path / "train" / "n01440764" / "n01440764_1.JPEG"
    corrupt(bad)
    cfg = data_cfg("imagenet", tmp_path, num_workers=num_workers)
    splits = build_datasets(cfg)  # the file list is fine; the image is only decoded when used
    train, _ = loaders(splits, cfg, 2)
    with pytest.raises(BadImageError) as err:
        next(iter(train))
    text = one_line(err)
    assert isinstance(err.value, UserError)  # printed as one gnrepro: error: line
    assert text.startswith(f"cannot read image {bad}") and "data.skip_bad=true" in text


def test_skip_bad_replaces_and_counts(tmp_path):
    fake.make_imagenet(tmp_path, classes=2, train_per_class=3, val_per_class=1)
    corrupt(tmp_path / "train" / "n01440764" / "n01440764_0.JPEG")
    corrupt(tmp_path / "val" / "n01441764" / "ILSVRC2012_val_00000002.JPEG")
    cfg = data_cfg("imagenet", tmp_path, skip_bad=True)
    splits = build_datasets(cfg)
    train, val = loaders(splits, cfg, 3)
    sizes = [len(t) for _, t in train]
    assert sizes == [3, 3]  # full steps: the bad image is replaced, not dropped
    assert [len(t) for _, t in val] == [2]
    assert splits.skipped_images == 2


@pytest.mark.parametrize("name,cls", [("cifar10", "CIFAR10"), ("pets", "OxfordIIITPet"), ("imagenette", "Imagenette")])
def test_failed_download_is_one_line(tmp_path, monkeypatch, name, cls):
    from urllib.error import URLError

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(getattr(torchvision.datasets, cls), "__init__", offline)  # never touch the network
    with pytest.raises(DataError, match=f"data={name} data.download=true failed .URLError") as err:
        build_datasets(data_cfg(name, tmp_path / "new", download=True))
    assert "check the connection, or extract" in one_line(err)


def test_sample_paths_pickle_for_spawned_workers(tmp_path):
    import pickle

    fake.make_pets(tmp_path)
    splits = build_datasets(data_cfg("pets", tmp_path))
    path_of = pickle.loads(pickle.dumps(splits.train.path_of))
    assert path_of(0).name == "Abyssinian_1.jpg"
