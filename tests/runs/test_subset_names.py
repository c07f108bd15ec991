"""The run folder names data.subset (issue 25): a quick subset check never takes the folder of the
full run with the same settings, and N is written as an integer in the folder and the report."""
import pytest

from conftest import compose_train
from fake_runs import fake_run
from gnrepro.report import build_report
from gnrepro.runs.identity import run_name
from gnrepro.runs.results import load_runs


def test_a_subset_run_has_its_own_folder_named_with_an_integer():
    full = compose_train("norm=gn", "batch=2", hydra=True).hydra
    sub = compose_train("norm=gn", "batch=2", "data.subset=64", hydra=True).hydra
    assert full.run.dir == "outputs/runs/digits_resnet50/gn32_b2x8_e15_s0"  # no subset: the name it always had
    assert sub.run.dir == full.run.dir + "_sub64" and sub.sweep.subdir.endswith("_s0_sub64")
    # one name per run, however the number arrives (a sweep value or an older record may be a float)
    cfg = compose_train("norm=gn", "batch=2")
    as_float = run_name("digits", "resnet50", cfg.norm, cfg.conv, 2, 8, 15, 0, data_cfg={"subset": 64.0})
    assert as_float == "digits_resnet50/gn32_b2x8_e15_s0_sub64"


def test_the_subset_comes_before_the_other_suffixes():
    hydra = compose_train("data.subset=8", "precision=bf16", "optim.base_lr=0.05", hydra=True).hydra
    assert "_s0_sub8_bf16_h" in hydra.run.dir


@pytest.mark.parametrize("subset", [64, 64.0])
def test_the_report_names_a_subset_group_with_an_integer(tmp_path, subset):
    """Runs with and without a subset in one results folder: pandas would hold the column as floats."""
    fake_run(tmp_path / "runs", data="digits", norm="gn", batch=2, subset=subset)
    fake_run(tmp_path / "runs", data="digits", norm="gn", batch=2, seed=1)
    assert sorted(map(str, load_runs(tmp_path / "runs").subset)) == ["-", "64"]
    files = build_report(tmp_path / "runs", tmp_path / "out")
    groups = {f.parent.name for f in files} - {"out"}
    assert groups == {"digits_resnet50_w8_e100", "digits_resnet50_w8_e100_sub64"}
    caption = (tmp_path / "out/digits_resnet50_w8_e100_sub64/table2_batch_size.md").read_text()
    assert "64-image train subset" in caption and "64.0" not in caption
