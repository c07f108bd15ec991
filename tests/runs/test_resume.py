"""Runs that survive: bitwise resume after SIGKILL, SIGTERM checkpoints, divergence, torn writes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gnrepro import runfiles
from gnrepro.errors import ConfigError
from gnrepro.runfiles import DamagedFile
from gnrepro.runs.identity import protocol_hash, settings_diff
from gnrepro.runs.resume import previous_state
from gnrepro.runfiles import read_summary

TINY = ("norm=bn", "batch=4", "workers=2", "data.subset=48", "data.image_size=10", "eval_batch=512",
        "deterministic=true", "progress=false", "keep_checkpoint=last")  # the tests compare last.pt
RUN = "digits_resnet50/bn_b4x2_e{epochs}_s0_sub{subset}"


def start(tmp_path, *overrides):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "gnrepro.train", *TINY, *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "epoch_seconds", "images_per_s")} for r in rows]


def mid_epoch_checkpoint(path: Path, epoch: int):
    """True once ``path`` holds a checkpoint taken part-way through ``epoch``."""
    def check():
        if not path.exists():
            return False
        ckpt = torch.load(path, weights_only=True, mmap=True)
        return ckpt["next_epoch"] == epoch and ckpt["meter"] is not None
    return check


@pytest.mark.slow
def test_sigkill_then_relaunch_gives_the_same_run_bitwise(tmp_path):
    args = ("epochs=3", "data.subset=32", "checkpoint_steps=2")  # 4 steps per epoch
    straight = start(tmp_path, *args, "results_dir=straight")
    assert straight.wait(timeout=900) == 0, straight.communicate()

    killed = start(tmp_path, *args, "results_dir=killed")
    metrics = tmp_path / "killed" / RUN.format(epochs=3, subset=32) / "metrics.jsonl"
    wait_for(mid_epoch_checkpoint(metrics.parent / "last.pt", epoch=2), killed)
    killed.send_signal(signal.SIGKILL)  # epoch 3 is still to come, so the run cannot have finished
    killed.wait()
    assert not (metrics.parent / "summary.json").exists()
    resumed = start(tmp_path, *args, "results_dir=killed")
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    assert "resuming" in out + err

    a_dir, b_dir = tmp_path / "straight" / RUN.format(epochs=3, subset=32), metrics.parent
    a, b = runfiles.load_checkpoint(a_dir / "last.pt"), runfiles.load_checkpoint(b_dir / "last.pt")
    diff = max((a["model"][k].double() - b["model"][k].double()).abs().max().item() for k in a["model"])
    assert diff == 0.0, f"parameters differ by {diff}"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert without_timing(runfiles.read_jsonl(a_dir / "metrics.jsonl")) == \
        without_timing(runfiles.read_jsonl(b_dir / "metrics.jsonl"))
    sa, sb = read_summary(a_dir), read_summary(b_dir)
    assert sa["final_error"] == sb["final_error"] and sa["val_errors"] == sb["val_errors"]


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    args = ("epochs=2", "data.subset=64")
    proc = start(tmp_path, *args)
    log = tmp_path / "outputs/runs" / RUN.format(epochs=2, subset=64) / "train.log"
    wait_for(lambda: log.exists() and "steps/epoch" in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)  # during the first epoch: 8 steps, then a second epoch
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("gnrepro: stopped: SIGTERM received: checkpoint saved at epoch"), err
    ckpt = runfiles.load_checkpoint(log.parent / "last.pt")  # weights_only=True
    assert ckpt["next_epoch"] == 1 and ckpt["meter"][0]["steps"] >= 1  # saved part-way through epoch 1
    assert not (log.parent / "summary.json").exists()

    proc = start(tmp_path, *args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    summary = read_summary(log.parent)
    assert summary["status"] == "complete" and summary["epochs_done"] == 2
    assert [r["epoch"] for r in runfiles.read_jsonl(log.parent / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_nan_loss_stops_the_run_marks_it_failed_and_keeps_a_finite_checkpoint(tmp_path):
    proc = start(tmp_path, "epochs=2", "optim.base_lr=1e12", "checkpoint_steps=1")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("gnrepro: error: the ") and "became" in line and "marked failed" in line, err
    run_dir = tmp_path / "outputs/runs" / (RUN.format(epochs=2, subset=48) + "_" + protocol_hash({"base_lr": 1e12}))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["final_error"] is None and "became" in summary["reason"]
    ckpt = runfiles.load_checkpoint(run_dir / "last.pt")
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    again = start(tmp_path, "epochs=2", "optim.base_lr=1e12", "checkpoint_steps=1")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "already failed" in out + err


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    runfiles.write_json(path, {"status": "complete", "final_error": 24.1})

    def killed(fd):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        runfiles.write_json(path, {"status": "complete", "final_error": 99.9})
    assert json.loads(path.read_text())["final_error"] == 24.1
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"], "no temp file left behind"


def test_a_truncated_summary_and_a_truncated_checkpoint_are_named_with_their_fix(tmp_path):
    (tmp_path / "summary.json").write_text('{"status": "compl')
    with pytest.raises(DamagedFile, match="summary.json is damaged .*delete it to resume the run from last.pt"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").unlink()
    runfiles.save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(1000)})
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFile, match=r"last.pt is damaged \(cannot be loaded.*delete it to restart"):
        previous_state(tmp_path, {})


def test_a_run_folder_with_other_settings_is_refused_naming_the_keys(tmp_path):
    old = {"batch": 2, "optim": {"base_lr": 0.1}, "progress": True, "data": {"name": "digits", "num_workers": 0}}
    (tmp_path / "config.yaml").write_text(json.dumps(old))  # JSON is YAML
    new = {"batch": 2, "optim": {"base_lr": 0.2}, "progress": False, "data": {"name": "digits", "num_workers": 4}}
    with pytest.raises(ConfigError, match=r"optim.base_lr \(0.1 -> 0.2\)"):
        previous_state(tmp_path, new)
    assert settings_diff(old, {**old, "progress": False}) == []
    assert previous_state(tmp_path, {**old, "progress": False}).checkpoint is None


def test_a_partial_epoch_resumed_on_another_number_of_processes_keeps_its_sums():
    from gnrepro.engine.distributed import Processes
    from gnrepro.train import restore_meter

    saved = [{"loss_sum": 4.0, "wrong": 3, "seen": 8, "steps": 2, "seconds": 1.5},
             {"loss_sum": 6.0, "wrong": 1, "seen": 8, "steps": 2, "seconds": 1.4}]
    assert restore_meter(saved, Processes(1, 2)).loss_sum == 6.0
    one = restore_meter(saved, Processes(0, 1))
    assert (one.loss_sum, one.wrong, one.seen, one.steps) == (10.0, 4, 16, 2)
    assert restore_meter(None, Processes(0, 1)) is None


def test_committed_run_records_still_match_the_current_config(compose_cfg):
    """Every key added to the config since a committed run was made is declared in ADDED_KEYS with
    the value that reproduces it, so re-launching its sweep skips it instead of refusing the folder."""
    from omegaconf import OmegaConf

    from gnrepro.runs.identity import ADDED_KEYS, RUNTIME_KEYS
    from gnrepro.runs.identity import flatten as _flatten
    from gnrepro.resources import CONFIGS

    records = sorted(Path(__file__).resolve().parents[2].glob("results/runs/*/*/config.yaml"))
    assert records, "the repository commits the run records behind its proxy reports"
    norm_files = {p.stem for p in (CONFIGS / "norm").glob("*.yaml")}
    for path in records:
        old = runfiles.read_config(path)
        choices = [f"model={old['model']['name']}", f"data={old['data']['name']}"]
        if old["norm"]["name"] in norm_files:
            choices.append(f"norm={old['norm']['name']}")
        new = _flatten(OmegaConf.to_container(compose_cfg(*choices, "data.root=/unused") if old["data"]["name"] != "digits"
                                              else compose_cfg(*choices), resolve=False))
        flat_old = _flatten(old)
        added = set(new) - set(flat_old)
        for key in sorted(added):
            if any(key == r or key.startswith(r + ".") for r in RUNTIME_KEYS):
                continue
            if any(k.startswith(key + ".") for k in flat_old):  # a block the run's preset filled (data.augment)
                continue
            assert key in ADDED_KEYS and ADDED_KEYS[key] == new[key], f"{path}: {key} was added; declare it in ADDED_KEYS"


def test_gn_with_groups_unset_is_the_same_setting_as_g32():
    unset = {"norm": {"name": "gn", "groups": None, "channels_per_group": None}}
    g32 = {"norm": {"name": "gn", "groups": 32, "channels_per_group": None}}
    assert settings_diff(unset, g32) == [] and settings_diff(g32, unset) == []
    assert settings_diff(unset, {"norm": {"name": "gn", "groups": 16, "channels_per_group": None}}) == [
        "norm.groups (32 -> 16)"]
    cpg = {"norm": {"name": "gn", "groups": None, "channels_per_group": 16}}
    assert settings_diff(unset, cpg) != []


def test_a_sweep_stops_before_its_first_job_when_a_later_folder_holds_other_settings(tmp_path, compose_cfg):
    from gnrepro.settings.preflight import check_jobs

    argv = ["-m", "seed=0,1", "epochs=1", f"results_dir={tmp_path}"]
    folder = tmp_path / "digits_resnet50" / "bn_b32x8_e1_s1"  # job 2's folder, made with another LR
    folder.mkdir(parents=True)
    cfg = OmegaConf.to_container(compose_cfg("seed=1", "epochs=1", "optim.base_lr=0.2"), resolve=True)
    runfiles.write_text(folder / runfiles.CONFIG, OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=r"job 2 of 2 \(seed=1 epochs=1 .*\): .*holds a run with other settings: "
                                          r"optim.base_lr \(0.2 -> 0.1\)"):
        check_jobs(argv, locks=False)
    check_jobs(["-m", "seed=0", "epochs=1", f"results_dir={tmp_path}"], locks=False)  # job 1 alone is fine
