"""scripts/sort_imagenet_val.py turns the flat val/ of the original archive into val/<wnid>/ using
the devkit's ground truth (meta.mat + ILSVRC2012_validation_ground_truth.txt), after which
data=imagenet loads it."""
import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import scipy.io


from conftest import data_config
from gnrepro.data import build_datasets, fake

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("sort_imagenet_val", ROOT / "scripts" / "sort_imagenet_val.py")
sort_imagenet_val = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sort_imagenet_val)


def data_cfg(root):
    cfg = data_config("imagenet", root)
    cfg.num_workers = 0
    return cfg


def make_devkit(folder: Path, wnids, truth_ids) -> Path:
    """A devkit with meta.mat (IDs 1..n for the leaf wnids, plus one non-leaf synset) and the truth file."""
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    rows = [(k + 1, w, f"class {k}", "a thing", 0) for k, w in enumerate(wnids)]
    rows.append((len(wnids) + 1, "n00001740", "entity", "the root", 3))  # not a class: has children
    (folder / "data").mkdir(parents=True)
    scipy.io.savemat(folder / "data" / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})
    (folder / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in truth_ids))
    return folder


def test_sort_flat_val_with_the_devkit_then_load(tmp_path):
    data = fake.make_imagenet(tmp_path / "imagenet", classes=3, val_per_class=2, flat_val=True)
    wnids = sorted(p.name for p in (data / "train").iterdir())
    # make_imagenet numbers val images class by class: 1,2 -> wnid 0; 3,4 -> wnid 1; 5,6 -> wnid 2.
    # Give the devkit IDs in a different order than sorted wnids, as the real one does.
    order = [wnids[2], wnids[0], wnids[1]]
    truth = [order.index(wnids[(i - 1) // 2]) + 1 for i in range(1, 7)]
    devkit = make_devkit(tmp_path / "ILSVRC2012_devkit_t12", order, truth)
    assert sort_imagenet_val.main([str(data / "val"), "--devkit", str(devkit)]) == 0
    for k, wnid in enumerate(wnids):
        assert sorted(p.name for p in (data / "val" / wnid).iterdir()) == [
            f"ILSVRC2012_val_{2 * k + 1:08d}.JPEG", f"ILSVRC2012_val_{2 * k + 2:08d}.JPEG"]
    splits = build_datasets(data_cfg(data))
    assert len(splits.val) == 6 and splits.num_classes == 3


def test_devkit_archive_and_dry_run(tmp_path, capsys):
    data = fake.make_imagenet(tmp_path / "imagenet", classes=2, val_per_class=1, flat_val=True)
    wnids = sorted(p.name for p in (data / "train").iterdir())
    devkit = make_devkit(tmp_path / "ILSVRC2012_devkit_t12", wnids, [1, 2])
    archive = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    sort_imagenet_val.main([str(data / "val"), "--devkit", str(archive), "--dry-run"])
    assert "would move 2 images" in capsys.readouterr().out
    assert not any(p.is_dir() for p in (data / "val").iterdir())  # nothing moved
