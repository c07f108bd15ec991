"""Every on-disk data config end to end through ``python -m gnrepro.train`` on a tiny fake copy
(one epoch, 2 images per step, 32 px crops), and the one-line CLI errors for a missing root and a
corrupt image met by a DataLoader worker mid-epoch."""
import json

import pytest

from gnrepro.data import fake

SMALL = ["epochs=1", "batch=2", "workers=1", "eval_batch=8", "progress=false", "norm=gn"]
CROP = ["data.train_crop=32", "data.eval_resize=36", "data.eval_crop=32"]

CASES = {  # name: (make the fake copy, extra overrides, classes, val images)
    "imagenet": (fake.make_imagenet, CROP, 3, 6),
    "pets": (fake.make_pets, CROP, 3, 6),
    "imagenette": (fake.make_imagenette, CROP, 10, 10),
    "cifar10": (lambda r: fake.make_cifar(r, "cifar10"), [], 10, 6),
    "cifar100": (lambda r: fake.make_cifar(r, "cifar100"), [], 100, 6),
}


def single_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gnrepro: error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_data_config_runs_end_to_end(run_cli, tmp_path, name):
    make, extra, classes, n_val = CASES[name]
    data = make(tmp_path / "data")
    proc = run_cli(f"data={name}", f"data.root={data}", "data.num_workers=0", "data.subset=4", *SMALL, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "outputs" / "runs" / f"{name}_resnet50" / "gn32_b2x1_e1_s0_sub4"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"] == name and summary["status"] == "complete" and summary["epochs"] == 1
    (metrics,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["train_images"] == 4  # subset=4 at 2 images/step: 2 full steps
    log = (run / "train.log").read_text()
    assert f"4 train / {n_val} val images" in log


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_missing_root_from_the_cli(run_cli, tmp_path):
    line = single_error_line(run_cli("data=cifar10", f"data.root={tmp_path / 'nope'}", *SMALL))
    assert f"data.root={tmp_path / 'nope'} does not exist" in line and "cifar-10-batches-py/" in line
    assert not (tmp_path / "outputs").exists()  # nothing left behind


@pytest.mark.slow
def test_corrupt_image_in_a_worker_is_one_line(run_cli, tmp_path):
    data = fake.make_imagenet(tmp_path / "data", classes=1, train_per_class=2, val_per_class=1)
    bad = data / "train" / "n01440764" / "n01440764_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    line = single_error_line(run_cli("data=imagenet", f"data.root={data}", "data.num_workers=1", *SMALL, *CROP))
    assert f"cannot read image {bad}" in line and "data.skip_bad=true" in line


@pytest.mark.slow
def test_skip_bad_from_the_cli_completes_and_reports(run_cli, tmp_path):
    data = fake.make_imagenet(tmp_path / "data", classes=1, train_per_class=2, val_per_class=1)
    (data / "train" / "n01440764" / "n01440764_0.JPEG").write_bytes(b"not a jpeg")
    proc = run_cli("data=imagenet", f"data.root={data}", "data.num_workers=0", "data.skip_bad=true", *SMALL, *CROP)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped unreadable image" in proc.stdout + proc.stderr
