"""The main job through its real entry point: ``python -m gnrepro.train``, from a fresh directory."""
import json
import statistics

import pytest
import torch
import yaml

from gnrepro.models.build import build_model
from gnrepro.runfiles import load_checkpoint, read_jsonl

QUICK = ("data.subset=96", "data.image_size=10", "eval_batch=512", "keep_checkpoint=last")  # these tests read last.pt


@pytest.mark.slow
def test_main_job_end_to_end_from_another_directory(run_cli, tmp_path, compose_cfg):
    proc = run_cli("norm=gn", "batch=4", "workers=2", "epochs=3", *QUICK)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "outputs/runs/digits_resnet50/gn32_b4x2_e3_s0_sub96"
    assert run_dir.is_dir(), list(tmp_path.rglob("*"))

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["norm"]["name"] == "gn" and config["batch"] == 4 and config["workers"] == 2

    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all({"lr", "train_loss", "train_error", "val_error", "images_per_s"} <= r.keys() for r in rows)
    assert rows[0]["lr"] == pytest.approx(0.1 * 4 / 32)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["final_error"] == statistics.median(r["val_error"] for r in rows)
    for key, value in {"norm": "gn", "groups": None, "batch": 4, "workers": 2, "model": "resnet50",
                       "data": "digits", "seed": 0, "epochs": 3}.items():
        assert summary[key] == value, key
    assert summary["wall_seconds"] > 0 and summary["images_per_s"] > 0

    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["next_epoch"] == 4 and ckpt["meter"] is None and len(ckpt["history"]) == 3
    model = build_model(compose_cfg("norm=gn", "workers=2"), 10, 1)
    model.load_state_dict(ckpt["model"])


@pytest.mark.slow
def test_same_seed_gives_the_same_run(run_cli, tmp_path):
    args = ("norm=bn", "batch=8", "workers=2", "epochs=1", "deterministic=true", *QUICK)
    a = run_cli(*args, "results_dir=a")
    b = run_cli(*args, "results_dir=b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    rel = "digits_resnet50/bn_b8x2_e1_s0_sub96/metrics.jsonl"
    ra, rb = read_jsonl(tmp_path / "a" / rel), read_jsonl(tmp_path / "b" / rel)
    assert ra[0]["train_loss"] == rb[0]["train_loss"] and ra[0]["val_error"] == rb[0]["val_error"]
    wa = torch.load(tmp_path / "a" / rel.replace("metrics.jsonl", "last.pt"), weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / rel.replace("metrics.jsonl", "last.pt"), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
