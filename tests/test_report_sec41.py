"""The rest of the paper's Sec. 4.1 in the report: Batch Renorm, VGG-16 with Figure 6, and Figure 1
with precise BN; on fabricated ImageNet run folders, and on tiny real proxy sweeps of every new preset."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fake_runs import fake_run
from gnrepro.engine.probe import FILE
from gnrepro.report import build_report
from gnrepro.runs.results import load_runs
from gnrepro.runfiles import write_jsonl


def test_batch_renorm_vgg16_precise_bn_and_figure6_beside_the_published_numbers(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for norm, err in (("bn", 27.0), ("brn", 26.0), ("gn", 24.0)):
            fake_run(runs, norm=norm, batch=4, seed=seed, error=err + seed / 10)
        for b in (32, 8):  # the BN and GN runs at 4 are the Batch Renorm table's
            fake_run(runs, norm="bn", batch=b, seed=seed, error=23.0 + 16 / b, eval_stats="precise")
            fake_run(runs, norm="gn", batch=b, seed=seed, error=24.0)
            fake_run(runs, norm="bn", batch=b, seed=seed, error=24.0 + 16 / b)
        for norm, err in (("none", 29.0), ("bn", 28.0), ("gn", 27.5)):
            folder = fake_run(runs, model="vgg16", norm=norm, seed=seed, error=err)
            spread = {"none": 50.0, "bn": 2.0, "gn": 3.0}[norm]
            write_jsonl(folder / FILE, [{"step": s, "layer": "conv5_3", "p1": -spread / s, "p20": -1.0 / s,
                                         "p80": 1.0 / s, "p99": spread / s} for s in (1, 1001, 2001)])
    files = build_report(runs, tmp_path / "out")
    res, vgg = tmp_path / "out" / "imagenet_resnet50_w8_e100", tmp_path / "out" / "imagenet_vgg16_w8_e100"

    brn = pd.read_csv(res / "batch_renorm.csv")
    assert list(brn.norm) == ["BN", "BRN", "GN"] and list(brn.published) == [27.3, 26.3, 24.2]
    assert list(brn.difference.round(2)) == [-0.25, -0.25, -0.15] and list(brn.n) == [2, 2, 2]

    table = pd.read_csv(vgg / "vgg16.csv")
    assert list(table.norm) == ["no norm", "BN", "GN"] and list(table.published) == [29.2, 28.0, 27.6]
    assert vgg / "fig6_feature_distribution.png" in files and (vgg / "fig6_feature_distribution.png").stat().st_size
    assert not (res / "fig6_feature_distribution.png").exists(), "no probe, no Figure 6"

    precise = pd.read_csv(res / "fig1_precise_bn.csv")
    assert list(zip(precise.norm, precise["images/worker"])) == [
        ("BN", 32), ("BN", 8), ("BN", 4), ("BN, precise stats", 32), ("BN, precise stats", 8), ("GN", 32), ("GN", 8),
        ("GN", 4)]
    assert precise.published.isna().tolist() == [False, False, False, True, True, False, False, False]
    assert (res / "fig1_batch_size.png") in files


def test_no_brn_or_precise_runs_no_such_tables(tmp_path):
    fake_run(tmp_path / "runs", norm="bn", batch=4)
    build_report(tmp_path / "runs", tmp_path / "out")
    names = {p.stem for p in (tmp_path / "out" / "imagenet_resnet50_w8_e100").glob("*.csv")}
    assert "batch_renorm" not in names and "fig1_precise_bn" not in names and "table2_batch_size" in names


TINY = ["data=digits", "data.subset=16", "data.image_size=8", "epochs=1", "workers=2", "eval_batch=512",
        "progress=false", "optim.warmup=never"]
SWEEPS = {
    "batch_renorm": [],
    "vgg16": ["model.classifier_width=16", "model.pool_size=1", "probe.every_steps=1", "data.subset=64"],
    "fig1_precise_bn_proxy": ["batch=4", "norm.precise_batches=2"],
}


@pytest.mark.slow
def test_tiny_proxy_sweeps_of_the_new_presets_run_through_the_report(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    for preset, extra in SWEEPS.items():
        proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", f"experiment={preset}", *TINY, *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = load_runs(tmp_path / "outputs/runs")
    assert set(runs.status) == {"complete"}
    assert set(zip(runs.model, runs.norm_tag, runs.batch)) == {
        ("resnet50", "bn", 4), ("resnet50", "brn", 4), ("resnet50", "gn32", 4), ("resnet26", "bn-precise", 4),
        ("vgg16", "none", 32), ("vgg16", "bn", 32), ("vgg16", "gn32", 32)}
    files = build_report(tmp_path / "outputs/runs", tmp_path / "out")
    names = {p.name for p in files}
    assert {"batch_renorm.md", "vgg16.md", "fig6_feature_distribution.png", "fig1_precise_bn.md"} <= names
    (vgg,) = (tmp_path / "out").glob("digits_vgg16_*")  # one protocol group for the VGG runs
    assert "PROXY (digits), not ImageNet" in (vgg / "vgg16.md").read_text()
    assert all((Path(f) / FILE).is_file() for f in runs[runs.model == "vgg16"].folder)
