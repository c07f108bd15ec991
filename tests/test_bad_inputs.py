"""Every user mistake is caught before any compute: one line naming the value and the fix, exit 2,
no traceback, no run folder left behind. Runs the real entry point in-process (fast) and a few
cases through a subprocess."""
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from gnrepro import train


def run_inprocess(monkeypatch, capsys, tmp_path, *overrides):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", *overrides])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        train.cli()
    GlobalHydra.instance().clear()
    return exit_info.value.code, capsys.readouterr()


CASES = {
    "unknown model": (("model=resnet18",), "unknown model 'resnet18'; choose one of: resnet101, resnet26, resnet50, vgg16"),
    "unknown norm": (("norm=xn",), "unknown norm 'xn'; choose one of: bn, bn_ws, brn, gn, gn_ws, in, ln, none"),
    "unknown norm in a sweep": (("norm=bn,xn",), "unknown norm 'xn'"),
    "unknown data": (("data=mnist",), "unknown data 'mnist'; choose one of:"),
    "unknown norm.name": (("norm.name=xn",), "unknown norm.name 'xn'; choose one of: bn, brn, gn, ln, in, none"),
    "G not dividing C": (("norm=gn", "norm.groups=48"), "groups=48 cannot split a layer of 64 channels"),
    "C/G not dividing C": (("norm=gn", "norm.channels_per_group=3"), "channels_per_group=3 cannot split a layer of 64"),
    "both groups and channels_per_group": (("norm=gn", "norm.groups=8", "norm.channels_per_group=4"),
                                           "set exactly one of norm.groups or norm.channels_per_group"),
    "groups on BN": (("+norm.groups=8",), "norm 'bn' has no groups"),
    "batch < 1": (("batch=0",), "batch must be a positive integer, got 0; set e.g. batch=2"),
    "workers < 1": (("workers=0",), "workers must be a positive integer, got 0"),
    "epochs < 1": (("epochs=-3",), "epochs must be a positive integer, got -3"),
    "non-numeric batch": (("batch=two",), "batch must be a positive integer, got 'two'"),
    "non-numeric groups": (("norm=gn", "norm.groups=many"), "norm.groups must be a positive integer, got 'many'"),
    "non-numeric lr": (("optim.base_lr=fast",), "optim.base_lr must be a non-negative number, got 'fast'"),
    "results_dir not writable": (("results_dir=/proc/gnrepro",), "results_dir='/proc/gnrepro' is not writable"),
    "results_dir under a file": (("results_dir=afile/runs",), "results_dir='afile/runs' cannot be created"),
    "wandb online without credentials": (("logger=wandb", "logger.mode=online"),
                                         "logger.mode=online needs W&B credentials"),
    "subset < 1": (("data.subset=0",), "data.subset must be a positive integer, got 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, monkeypatch, capsys, tmp_path):
    overrides, needle = CASES[case]
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with W&B credentials
    code, out = run_inprocess(monkeypatch, capsys, tmp_path, *overrides)
    lines = out.err.strip().splitlines()
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("gnrepro: error: "), out.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out.err + out.out
    assert not (tmp_path / "results").exists(), "a rejected config must leave no run folder"


def test_debug_flag_lets_the_exception_through(monkeypatch, tmp_path):
    from gnrepro.norms import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra re-raises instead of printing
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", "batch=0", "debug=true"])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        train.cli()
    GlobalHydra.instance().clear()


def test_bad_input_through_a_real_process(run_cli, tmp_path):
    proc = run_cli("norm=gn", "norm.groups=48")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gnrepro: error: GN with groups=48 cannot split a layer of 64 channels (G must divide C); "
        "valid norm.groups for it: [1, 2, 4, 8, 16, 32, 64]"
    ]
    proc = run_cli("norm=xn")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gnrepro: error: unknown norm 'xn'; choose one of: bn, bn_ws, brn, gn, gn_ws, in, ln, none"]
