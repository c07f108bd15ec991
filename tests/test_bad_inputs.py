"""Hostile inputs, one table per class: bad values, sweeps, damaged run files, races, malicious
pickles, plan/report arguments. Each case asserts the exit code, exactly one ``gnrepro: error:``
line, no traceback and nothing left behind. Runs the real entry points in-process (fast) and at
least one case of each class through a subprocess."""
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from gnrepro import plan, report, runfiles, train
from gnrepro.data import fake
from gnrepro.resources import CONFIGS
from gnrepro.settings.preflight import job_config

# Hydra's own list of the norm group's files, which the error must name
NORM_FILES = ", ".join(sorted(p.stem for p in (CONFIGS / "norm").glob("*.yaml")))


def run_inprocess(monkeypatch, capsys, tmp_path, *overrides):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", *overrides])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        train.cli()
    GlobalHydra.instance().clear()
    return exit_info.value.code, capsys.readouterr()


CASES = {
    "unknown model": (("model=resnet18",), "unknown model 'resnet18'; choose one of: resnet101, resnet14, resnet26, resnet50, vgg16"),
    "unknown norm": (("norm=xn",), f"unknown norm 'xn'; choose one of: {NORM_FILES}"),
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
    "non-numeric lr": (("optim.base_lr=fast",), "optim.base_lr must be a finite number > 0, got 'fast'"),
    "results_dir not writable": (("results_dir=/proc/gnrepro",), "results_dir='/proc/gnrepro' is not writable"),
    "results_dir under a file": (("results_dir=afile/runs",), "results_dir='afile/runs' cannot be created"),
    "wandb online without credentials": (("logger=wandb", "logger.mode=online"),
                                         "logger.mode=online needs W&B credentials"),
    "subset < 1": (("data.subset=0",), "data.subset must be a positive integer, got 0"),
    # every key's type, range and finiteness (gnrepro.settings.schema)
    "negative seed": (("seed=-1",), "seed must be an integer in [0, 2147483647], got -1"),
    "infinite lr": (("optim.base_lr=inf",), "optim.base_lr must be a finite number > 0, got inf"),
    "nan lr": (("optim.base_lr=nan",), "optim.base_lr must be a finite number > 0, got nan"),
    "zero lr": (("optim.base_lr=0",), "optim.base_lr must be a finite number > 0, got 0"),
    "momentum above 1": (("optim.momentum=5",), "optim.momentum must be a finite number in [0, 1), got 5"),
    "negative weight decay": (("optim.weight_decay=-1",), "optim.weight_decay must be a finite number >= 0"),
    "infinite weight decay": (("optim.weight_decay=inf",), "optim.weight_decay must be a finite number >= 0"),
    "milestone beyond the run": (("optim.milestones=[1.5]",), "optim.milestones must be a list of numbers"),
    "milestones out of order": (("optim.milestones=[0.6,0.3]",), "strictly increasing, got [0.6, 0.3]"),
    "milestones not a list": (("optim.milestones=0.3",), "optim.milestones must be a list"),
    "unknown warmup mode": (("optim.warmup=sometimes",), "optim.warmup must be one of auto, always, never"),
    "warm-up longer than the run": (("optim.warmup=always", "epochs=3"), "optim.warmup_epochs=5 is not shorter than the run"),
    "negative warm-up": (("optim.warmup_epochs=-1",), "optim.warmup_epochs must be a finite number >= 0"),
    "boolean that is not": (("deterministic=maybe",), "deterministic must be true or false, got 'maybe'"),
    "progress not boolean": (("progress=1",), "progress must be true or false, got 1"),
    "groups a boolean": (("norm=gn", "norm.groups=true"), "norm.groups must be a positive integer, got True"),
    "float batch": (("batch=2.5",), "batch must be a positive integer, got 2.5"),
    "eval batch 0": (("eval_batch=0",), "eval_batch must be a positive integer, got 0"),
    "final_epochs 0": (("final_epochs=0",), "final_epochs must be a positive integer"),
    "negative checkpoint_steps": (("checkpoint_steps=-1",), "checkpoint_steps must be an integer >= 0"),
    "cuda:N that does not exist": (("device=cuda:99",), "device=cuda:99"),
    "tpu": (("device=tpu",), "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    "val fraction above 1": (("data.val_fraction=1.5",), "data.val_fraction must be a finite number in (0, 1), got 1.5"),
    "val fraction too small": (("data.val_fraction=0.001",), "each split needs at least 10"),
    "image size 0": (("data.image_size=0",), "data.image_size must be an integer in [8, 256], got 0"),
    "subset above the split": (("data.subset=100000",), "data.subset=100000 is more than the 1,437 train images"),
    "step larger than the split": (("batch=1000",), "one step needs batch*workers = 8000 images"),
    "negative loader workers": (("data.num_workers=-1",), "data.num_workers must be an integer >= 0"),
    "model.name not its depth": (("model.name=resnet18",), "unknown model.name 'resnet18'; choose one of: resnet14, resnet26, resnet50, resnet101, vgg16"),
    "model.name of another model": (("model.name=resnet101",), "model.name=resnet101 does not match model=resnet50"),
    "depth of another model": (("model.depth=101",), "model.depth=101 contradicts model.name=resnet50"),
    "data.name of another data set": (("data.name=cifar10",), "data.name=cifar10 does not match data=digits"),
    "data.name unknown": (("data.name=mnist",), "unknown data.name 'mnist'"),
    "unknown key under +": (("+optim.lr=0.5",), "unknown key optim.lr: optim has no 'lr'"),
    "unknown key without +": (("optim.lr=0.5",), "unknown key optim.lr: optim has no 'lr'"),
    "unknown top-level key": (("+lr=0.5",), "unknown key lr; the top-level keys are"),
    "empty results_dir": (("results_dir=",), "results_dir must be a non-empty string, got ''"),
    "null results_dir": (("results_dir=null",), "results_dir must be a non-empty string, got None"),
    "interpolation to nothing": (("epochs=${nosuch}",), "the config cannot be resolved"),
    "sweep without -m": (("seed=0,1",), "seed=0,1 is a sweep: add -m"),
    "conv eps 0": (("conv=ws", "conv.eps=0"), "conv.eps must be a finite number > 0, got 0"),
    "imagenette size": (("data=imagenette", "data.root=/x", "data.size=999px"), "data.size must be one of full, 320px, 160px"),
    "cifar std 0": (("data=cifar10", "data.root=/x", "data.std=[0,1,1]"), "data.std must be a list of 3 numbers"),
    "wandb mode": (("logger=wandb", "logger.mode=sometimes"), "logger.mode must be one of offline, online, disabled"),
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
    assert not (tmp_path / "outputs").exists(), "a rejected config must leave no run folder"


def test_debug_flag_lets_the_exception_through(monkeypatch, tmp_path):
    from gnrepro.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra re-raises instead of printing
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", "batch=0", "debug=true"])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        train.cli()
    GlobalHydra.instance().clear()


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_bad_input_through_a_real_process(run_cli, tmp_path):
    proc = run_cli("norm=gn", "norm.groups=48")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gnrepro: error: GN with groups=48 cannot split a layer of 64 channels (G must divide C); "
        "valid norm.groups for it: [1, 2, 4, 8, 16, 32, 64]"
    ]
    proc = run_cli("norm=xn")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"gnrepro: error: unknown norm 'xn'; choose one of: {NORM_FILES}"]


def one_error_line(code, out, expected_code=2):
    lines = out.err.strip().splitlines()
    assert code == expected_code, out
    assert len([x for x in lines if x.startswith("gnrepro: error: ")]) == 1 and len(lines) == 1, out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_value_case_fails_before_building_a_model(monkeypatch, capsys, tmp_path):
    """The value cases never reach the data or the model (so they cost Python start-up only)."""
    monkeypatch.setattr(train, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    monkeypatch.setattr(train, "build_datasets", lambda *a, **k: pytest.fail("data was loaded"))
    for overrides in (("seed=-1",), ("optim.base_lr=nan",), ("-m", "seed=0,-1"), ("+optim.lr=0.5",)):
        code, out = run_inprocess(monkeypatch, capsys, tmp_path, *overrides)
        one_error_line(code, out)


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_bad_values_through_a_real_process(run_cli, tmp_path):
    proc = run_cli("optim.base_lr=nan")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gnrepro: error: optim.base_lr must be a finite number > 0, got nan; set e.g. optim.base_lr=0.1"]
    assert not any(tmp_path.iterdir())


def test_unusual_but_legal_values_are_explained_in_one_line(compose_cfg):
    from gnrepro.settings.validate import validate

    notes = validate(compose_cfg("epochs=3"))
    assert notes == ["final_epochs=5 is more than epochs=3: the result is the median of all 3 epochs"]


# ---------------------------------------------------------------------------------------- sweeps

SWEEPS = {
    "second job bad": (("-m", "seed=0,-1"), "job 2 of 2 (seed=-1): seed must be an integer in [0, 2147483647]"),
    "one bad combination": (("-m", "batch=64,32", "epochs=3,20", "optim.warmup=auto"),
                            "job 1 of 4 (batch=64 epochs=3 optim.warmup=auto): optim.warmup_epochs=5 is not shorter"),
    "bad lr in a list": (("-m", "optim.base_lr=0.1,inf"), "job 2 of 2 (optim.base_lr=inf): optim.base_lr must be"),
    "preset with a bad value": (("-m", "experiment=fig1_batch_size_proxy", "workers=0"),
                                "job 1 of 10 (norm=bn batch=32 experiment=fig1_batch_size_proxy workers=0): workers must be"),
    "unknown key in a sweep": (("-m", "seed=0,1", "+optim.lr=0.5"), "unknown key optim.lr"),
}


@pytest.mark.parametrize("case", list(SWEEPS))
def test_a_sweep_is_validated_whole_before_its_first_job(case, monkeypatch, capsys, tmp_path):
    overrides, needle = SWEEPS[case]
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("a job started"))
    code, out = run_inprocess(monkeypatch, capsys, tmp_path, *overrides)
    assert needle in one_error_line(code, out)
    assert not any(tmp_path.iterdir()), "no folder, not even Hydra's multirun.yaml"


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_a_bad_sweep_through_a_real_process(run_cli, tmp_path):
    proc = run_cli("-m", "seed=0,-1", "epochs=1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gnrepro: error: job 2 of 2 (seed=-1 epochs=1): seed must be an "
                                                "integer in [0, 2147483647], got -1; set e.g. seed=0"]
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------- damaged run files

TINY = ("batch=2", "workers=1", "epochs=1", "data.subset=8", "progress=false")


def run_folder(tmp_path) -> tuple[Path, dict]:
    cfg, _, folder = job_config(list(TINY), multirun=False)
    folder = tmp_path / folder
    folder.mkdir(parents=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return folder, resolved


def checkpoint(resolved: dict, model: dict) -> dict:
    return {"next_epoch": 1, "meter": None, "epoch_lr": 0.1, "history": [], "model": model, "optimizer": {},
            "scheduler": {}, "rng": [], "config": resolved}


DAMAGED = {
    "summary null": ("summary.json", lambda f, r: (f / "summary.json").write_text("null"), "not a run summary"),
    "summary garbage": ("summary.json", lambda f, r: (f / "summary.json").write_text("\x00garbage{"), "not JSON"),
    "summary with NaN": ("summary.json", lambda f, r: (f / "summary.json").write_text('{"status": "complete", '
                                                                                    '"final_error": NaN}'), "not JSON"),
    "config unparsable": ("config.yaml", lambda f, r: (f / "config.yaml").write_text("batch: [unclosed\n"), "not YAML"),
    "config a list": ("config.yaml", lambda f, r: (f / "config.yaml").write_text("- 1\n- 2\n"), "not a config"),
    "checkpoint holding {}": ("last.pt", lambda f, r: torch.save({}, f / "last.pt"), "not a checkpoint of this trainer"),
    "checkpoint of a tensor": ("last.pt", lambda f, r: torch.save(torch.ones(3), f / "last.pt"), "holds a Tensor"),
    "checkpoint garbage": ("last.pt", lambda f, r: (f / "last.pt").write_bytes(b"PK\x03\x04junk"), "cannot be loaded"),
    "checkpoint of another run": ("last.pt", lambda f, r: torch.save(checkpoint({**r, "seed": 7}, {}), f / "last.pt"),
                                  "a checkpoint of a run with other settings: seed (7 -> 0)"),
    "checkpoint of another model": ("last.pt", lambda f, r: torch.save(checkpoint(r, {"fc.weight": torch.ones(2, 2)}),
                                                                       f / "last.pt"), "does not fit this model"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_file_is_named_with_its_fix(case, monkeypatch, capsys, tmp_path):
    name, damage, needle = DAMAGED[case]
    folder, resolved = run_folder(tmp_path)
    damage(folder, resolved)
    before = snapshot(folder)
    code, out = run_inprocess(monkeypatch, capsys, tmp_path, *TINY)
    line = one_error_line(code, out)
    assert f"{name} is damaged" in line and needle in line and runfiles.FIXES[name] in line, line
    after = {p: b for p, b in snapshot(folder).items() if ".hydra" not in p.parts and p.name not in ("train.log", ".lock")}
    assert after == before, "the damaged file is left as it was, nothing else written"


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_a_damaged_checkpoint_through_a_real_process(run_cli, tmp_path):
    folder, _ = run_folder(tmp_path)
    torch.save({}, folder / "last.pt")
    proc = run_cli(*TINY)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("gnrepro: error: ") and f"{folder.name}/last.pt is damaged" in proc.stderr


def test_json_is_strict_when_written_and_read(tmp_path):
    runfiles.write_json(tmp_path / "s.json", {"status": "failed", "final_error": math.nan, "rows": [math.inf, 1.0]})
    assert json.loads((tmp_path / "s.json").read_text(), parse_constant=pytest.fail) == \
        {"status": "failed", "final_error": None, "rows": [None, 1.0]}
    runfiles.write_jsonl(tmp_path / "m.jsonl", [{"epoch": 1, "val_loss": math.nan}])
    assert runfiles.read_jsonl(tmp_path / "m.jsonl") == [{"epoch": 1, "val_loss": None}]


# ------------------------------------------------------------------------------------------ races

def test_a_second_launch_into_a_running_folder_is_refused(monkeypatch, capsys, tmp_path):
    folder, _ = run_folder(tmp_path)
    with runfiles.RunLock(folder):  # another open file description: flock refuses it even in this process
        code, out = run_inprocess(monkeypatch, capsys, tmp_path, *TINY)
        line = one_error_line(code, out)
        assert f"is already running (pid {os.getpid()})" in line
    assert runfiles.running_pid(folder) is None


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_a_second_launch_through_a_real_process(run_cli, tmp_path):
    folder, _ = run_folder(tmp_path)
    with runfiles.RunLock(folder):
        proc = run_cli(*TINY)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"gnrepro: error: {Path('outputs/runs') / folder.relative_to(tmp_path / 'outputs/runs')} is already running "
        f"(pid {os.getpid()}); wait for it to finish or stop it"]


def test_temp_files_of_an_interrupted_write_are_removed_on_the_next_launch(monkeypatch, capsys, tmp_path):
    folder, resolved = run_folder(tmp_path)
    runfiles.write_json(folder / "summary.json", {"status": "complete", "final_error": 5.0})
    for name in (".last.pt.x1y2.tmp", ".summary.json.abc.tmp", ".metrics.jsonl.q.tmp"):
        (folder / name).write_bytes(b"torn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", *TINY])
    GlobalHydra.instance().clear()
    train.cli()  # the run is complete: nothing is trained, but the leftovers go
    GlobalHydra.instance().clear()
    assert not list(folder.glob(".*.tmp"))


def test_run_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        runfiles.write_json(tmp_path / "summary.json", {"status": "complete"})
        runfiles.save_checkpoint(tmp_path / "last.pt", {"x": torch.ones(1)})
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o644)}


# ------------------------------------------------------------------------------ malicious pickles

class Payload:
    """Unpickling this creates a marker file (what a crafted batch file could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def cifar_with(tmp_path, name, file, payload):
    root = fake.make_cifar(tmp_path / "cifar", name=name)
    base = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    with open(base / file, "wb") as f:
        pickle.dump(payload, f)
    return root


PICKLES = {
    "train batch runs code": ("cifar10", "data_batch_3", lambda m: {"data": Payload(m), "labels": []}),
    "whole batch is a payload": ("cifar10", "data_batch_1", lambda m: Payload(m)),
    "meta runs code": ("cifar10", "batches.meta", lambda m: {"label_names": Payload(m)}),
    "cifar100 test runs code": ("cifar100", "test", lambda m: Payload(m)),
}


@pytest.mark.parametrize("case", list(PICKLES))
def test_a_crafted_pickle_is_refused_and_never_runs(case, monkeypatch, capsys, tmp_path):
    name, file, make = PICKLES[case]
    marker = tmp_path / "marker"
    root = cifar_with(tmp_path, name, file, make(marker))
    code, out = run_inprocess(monkeypatch, capsys, tmp_path, f"data={name}", f"data.root={root}", *TINY)
    line = one_error_line(code, out)
    callable_name = pickle.whichmodule(open, "open") + ".open"  # how pickle names the payload's callable
    assert f"refused to load {root}" in line and file in line and f"asks for {callable_name}" in line, line
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_a_crafted_pickle_through_a_real_process(run_cli, tmp_path):
    marker = tmp_path / "marker"
    root = cifar_with(tmp_path, "cifar10", "test_batch", Payload(marker))
    proc = run_cli("data=cifar10", f"data.root={root}", *TINY)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"gnrepro: error: refused to load {root}/cifar-10-batches-py/test_batch")
    assert not marker.exists() and not (tmp_path / "outputs").exists()


def test_honest_fake_cifar_pickles_still_load(tmp_path):
    from gnrepro.data.images import build_cifar

    root = fake.make_cifar(tmp_path, name="cifar100")
    cfg = OmegaConf.create({"name": "cifar100", "root": str(root), "download": False, "train_crop": 32,
                            "crop_padding": 4, "mean": [0.5] * 3, "std": [0.25] * 3})
    splits = build_cifar(cfg)
    assert len(splits.train) == 4 and len(splits.val) == 6 and splits.num_classes == 100
    image, label = splits.train[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 100


# -------------------------------------------------------------------------- plan/report arguments

def call(main, argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    GlobalHydra.instance().clear()
    return code, capsys.readouterr()


TOOLS = {
    "plan throughput 0": (plan.main, ["--throughput", "0"], "--throughput must be a finite number of images/s above 0"),
    "plan negative throughput": (plan.main, ["--throughput=-400"], "got '-400'"),
    "plan nan throughput": (plan.main, ["--throughput", "nan"], "got 'nan'"),
    "plan unknown experiment": (plan.main, ["experiment=nosuch"], "unknown experiment 'nosuch'; choose one of:"),
    "plan bad value in a job": (plan.main, ["experiment=fig1_batch_size_proxy", "seed=0,-1"], "seed=-1): seed must be"),
    "plan unknown flag": (plan.main, ["--nosuch"], "unrecognized arguments: --nosuch"),
    "report missing runs": (report.main, ["--runs", "nowhere"], "--runs nowhere is not a folder"),
    "report runs a file": (report.main, ["--runs", "afile"], "--runs afile is not a folder"),
    "report out on a file": (report.main, ["--runs", "runs", "--out", "afile/reports"], "is a file; choose another --out"),
    "report unknown flag": (report.main, ["--nosuch"], "unrecognized arguments: --nosuch"),
}


@pytest.mark.parametrize("case", list(TOOLS))
def test_plan_and_report_reject_their_own_bad_arguments(case, capsys, tmp_path, monkeypatch):
    main, argv, needle = TOOLS[case]
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "runs").mkdir()
    before = snapshot(tmp_path)
    code, out = call(main, argv, capsys, tmp_path, monkeypatch)
    assert needle in one_error_line(code, out)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "runs"]


def test_plan_and_report_list_damaged_run_folders(capsys, tmp_path, monkeypatch):
    from fake_runs import fake_run

    runs = tmp_path / "results/runs"
    good = fake_run(runs, data="digits", norm="gn", batch=2, workers=2, epochs=15)
    torn = fake_run(runs, data="digits", norm="bn", batch=2, workers=2, epochs=15)
    with open(torn / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 7, "val_err')
    null = fake_run(runs, data="digits", norm="bn", batch=4, workers=2, epochs=15)
    (null / "summary.json").write_text("null")
    code, out = call(report.main, ["--runs", str(runs), "--out", str(tmp_path / "out")], capsys, tmp_path, monkeypatch)
    assert code == 0 and "Traceback" not in out.err, out.err
    assert f"damaged, not averaged: {torn} (metrics.jsonl: line 7 is not JSON (a torn line?))" in out.out
    assert f"damaged, not averaged: {null} (summary.json: not a run summary: 'None')" in out.out
    listed = (tmp_path / "out/digits_resnet50_w2_e15/not_complete.md").read_text()
    assert "damaged" in listed and "torn line" in listed and str(good) not in listed
    assert plan.run_status(null).startswith("damaged (summary.json: not a run summary")


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_plan_and_report_arguments_through_real_processes(tmp_path):
    for module, args, needle in (("gnrepro.plan", ["--throughput", "0"], "--throughput must be"),
                                 ("gnrepro.report", ["--runs", "nowhere"], "--runs nowhere is not a folder")):
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("gnrepro: error: ") and needle in proc.stderr
    assert not any(tmp_path.iterdir())
