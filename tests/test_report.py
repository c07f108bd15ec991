"""The report (gnrepro.report) on a tiny real sweep launched through ``python -m gnrepro.train -m``,
and on fabricated run folders covering every table of the paper (Tables 1-3, Figure 1, ResNet-101)."""
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from fake_runs import fake_paper, fake_run
from gnrepro.report import build_report
from gnrepro.resources import PUBLISHED
from gnrepro.runs.results import load_runs

# 2 norms x 2 batch sizes through the fig1 preset, shrunk to a few steps on digits.
TINY = ["experiment=fig1_batch_size", "data=digits", "batch=4,2", "workers=2", "epochs=2", "data.subset=32",
        "data.image_size=8", "eval_batch=512", "progress=false"]
GROUP = "digits_resnet50_w2_e2_sub32"


def sweep(cwd: Path, *extra: str):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", *TINY, *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    proc = sweep(cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_tiny_sweep_writes_one_folder_per_setting(tiny):
    runs = load_runs(tiny / "outputs/runs")
    assert sorted(zip(runs.norm_tag, runs.batch)) == [("bn", 2), ("bn", 4), ("gn32", 2), ("gn32", 4)]
    assert set(runs.status) == {"complete"} and set(runs.workers) == {2} and runs.final_error.notna().all()


@pytest.mark.slow  # shares the tiny sweep fixture (a real training sweep)
def test_report_from_the_tiny_sweep_is_a_labelled_proxy(tiny, tmp_path):
    files = build_report(tiny / "outputs/runs", tmp_path)
    group = tmp_path / GROUP
    for name in ("table2_batch_size.md", "table2_batch_size.csv", "table2_batch_size.tex",
                 "fig1_batch_size.png", "fig5_curves.png"):
        assert (group / name).is_file() and group / name in files, name
    table = pd.read_csv(group / "table2_batch_size.csv")
    assert list(zip(table.norm, table["images/worker"])) == [("BN", 4), ("BN", 2), ("GN", 4), ("GN", 2)]
    assert list(table["published ImageNet (reference only)"]) == [27.3, 34.7, 24.2, 24.1]
    assert list(table.n) == [1, 1, 1, 1] and "difference" not in table.columns  # no diff against another data set
    for suffix in (".md", ".tex"):
        text = (group / f"table2_batch_size{suffix}").read_text()
        assert "PROXY (digits), not ImageNet" in text
    assert "imagenet" not in GROUP and "ImageNet" not in " ".join(c for c in table.columns if "reference" not in c)
    index = (tmp_path / "index.md").read_text()
    assert "(PROXY, not ImageNet)" in index and "not complete" not in index


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_rerunning_the_sweep_writes_nothing_new(tiny):
    # The trainer skips a run whose summary says "complete".
    summaries = sorted((tiny / "outputs/runs").rglob("summary.json"))
    before = {p: p.stat().st_mtime_ns for p in summaries}
    metrics = {p: p.stat().st_mtime_ns for p in (tiny / "outputs/runs").rglob("metrics.jsonl")}
    proc = sweep(tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in summaries} == before
    assert {p: p.stat().st_mtime_ns for p in metrics} == metrics


def test_every_imagenet_table_and_figure_with_published_values_and_differences(tmp_path):
    runs = tmp_path / "runs"
    fake_paper(runs)
    fake_run(runs, norm="gn", batch=2, seed=2, status="failed")          # listed, never averaged
    fake_run(runs, norm="bn", batch=2, seed=3, status="incomplete")
    fake_run(runs, data="digits", norm="bn", batch=2, workers=1, epochs=8, error=50.0)  # another data set
    build_report(runs, tmp_path / "out")
    group = tmp_path / "out" / "imagenet_resnet50_w8_e100"
    tables = {p.stem for p in group.glob("*.csv")}
    assert tables == {"table1_norms", "table2_batch_size", "table3_groups", "table3_channels"}
    for name in ("fig1_batch_size.png", "fig4_curves.png", "fig5_curves.png", "table3_groups.png",
                 "table3_channels.png", "not_complete.md"):
        assert (group / name).is_file(), name

    t1 = pd.read_csv(group / "table1_norms.csv")
    assert list(t1.norm) == ["BN", "LN", "IN", "GN"] and list(t1.published) == [23.6, 25.3, 28.4, 24.1]
    assert t1["reproduced mean"].round(2).tolist() == [23.55, 25.05, 28.05, 24.05]
    assert t1.difference.round(2).tolist() == [-0.05, -0.25, -0.35, -0.05]
    assert list(t1.n) == [2, 2, 2, 2] and t1["std"].tolist() == [0.07] * 4  # CSV keeps 2 decimals

    t2 = pd.read_csv(group / "table2_batch_size.csv")
    bn2 = t2[(t2.norm == "BN") & (t2["images/worker"] == 2)].iloc[0]
    assert bn2.n == 2 and bn2["not complete"] == 1 and bn2.published == 34.7  # incomplete run not averaged
    gn2 = t2[(t2.norm == "GN") & (t2["images/worker"] == 2)].iloc[0]
    assert gn2.n == 2 and gn2["not complete"] == 1 and gn2["reproduced mean"] == pytest.approx(24.05)

    t3 = pd.read_csv(group / "table3_groups.csv")
    assert list(t3["groups G"]) == [64, 32, 16, 8, 4, 2, 1]
    assert list(t3.published) == [24.6, 24.1, 24.6, 24.4, 24.6, 24.7, 25.3]
    t3c = pd.read_csv(group / "table3_channels.csv")
    assert list(t3c.published) == [24.4, 24.5, 24.2, 24.3, 24.8, 25.6, 28.4]

    r101 = pd.read_csv(tmp_path / "out" / "imagenet_resnet101_w8_e100" / "resnet101.csv")
    assert list(r101.published) == [22.0, 22.4, 31.9, 23.0]

    listed = (group / "not_complete.md").read_text()
    assert "failed" in listed and "partial" in listed
    proxy = tmp_path / "out" / "digits_resnet50_w1_e8"
    assert "PROXY (digits), not ImageNet" in (proxy / "table2_batch_size.md").read_text()
    assert not (proxy / "table2_batch_size.csv").read_text().count("difference")


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_report_cli(tmp_path):
    fake_run(tmp_path / "runs", norm="gn", batch=2)
    proc = subprocess.run([sys.executable, "-m", "gnrepro.report", "--runs", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out/imagenet_resnet50_w8_e100/table2_batch_size.md").is_file()
    out = subprocess.run([sys.executable, "-c", "import sys, gnrepro.report; print('gnrepro.train' in sys.modules,"
                          " 'gnrepro.engine.loop' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.slow  # shares the tiny sweep fixture (a real training sweep)
def test_summary_keys_the_report_relies_on_are_written_by_the_trainer(tiny):
    summary = json.loads(next((tiny / "outputs/runs").rglob("summary.json")).read_text())
    assert {"status", "final_error", "norm_tag", "batch", "workers", "epochs", "seed", "data", "model"} <= summary.keys()


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           "norm=bn,gn", "batch=2", "workers=1", "epochs=1", "data.subset=8", "data.image_size=8",
                           "progress=false"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(tmp_path.rglob("summary.json"))) == 2
    # In parallel, not one after the other: each run's span (its train.log's first to last
    # timestamp) overlaps the other's. Run one after the other, one would start after the other ended.
    spans = []
    for log in sorted(tmp_path.rglob("train.log")):
        stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                  for line in log.read_text().splitlines() if line.startswith("[20")]
        spans.append((min(stamps), max(stamps)))
    assert len(spans) == 2, spans
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the runs did not overlap: {spans}"


def test_a_reduced_depth_proxy_is_set_beside_the_papers_resnet50_numbers(tmp_path):
    """The proxies' ResNet-26/14 have no published row of their own: their reference column is the
    paper's ResNet-50 (the model of every table), read from the package's published_results.csv."""
    pub = pd.read_csv(PUBLISHED)
    for model in ("resnet26", "resnet14"):
        for norm in ("bn", "gn"):
            fake_run(tmp_path / "runs", data="digits", model=model, norm=norm, batch=32, workers=1, epochs=8)
    build_report(tmp_path / "runs", tmp_path / "out")
    paper = pub[(pub.experiment == "norms_at_32") & (pub.model == "resnet50")].set_index("norm").top1_error_pct
    for model in ("resnet26", "resnet14"):
        t1 = pd.read_csv(tmp_path / "out" / f"digits_{model}_w1_e8" / "table1_norms.csv")
        assert list(t1.norm) == ["BN", "GN"]
        assert list(t1["published ImageNet (reference only)"]) == [paper["bn"], paper["gn"]]
        assert "(resnet50)" in (tmp_path / "out" / f"digits_{model}_w1_e8" / "table1_norms.md").read_text()
