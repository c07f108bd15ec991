"""A run's identity (gnrepro.runs.identity) and the one status vocabulary of a run folder (gnrepro.runfiles)."""
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import compose_train
from fake_runs import fake_run
from gnrepro import plan, runfiles
from gnrepro.runs.identity import PAPER, PROXY_AUGMENT, RUNTIME_KEYS, SETTINGS, is_runtime, protocol_hash, run_name
from gnrepro.runs.results import PROTOCOL, load_runs

ROOT = Path(__file__).resolve().parents[2]


def _name(cfg) -> str:
    return run_name(cfg["data"]["name"], cfg["model"]["name"], cfg["norm"], cfg["conv"], cfg["batch"], cfg["workers"],
                    cfg["epochs"], cfg["seed"], cfg.get("init"), cfg.get("optim"), cfg.get("precision"), cfg.get("data"))


def test_every_committed_run_record_keeps_its_folder_name():
    records = sorted(ROOT.glob("results/runs/*/*/config.yaml"))
    assert records
    for path in records:
        cfg = runfiles.read_config(path)
        assert path.parent.relative_to(ROOT / "results/runs").as_posix() == _name(cfg), path


def test_the_paper_protocol_has_no_hash_and_any_departure_gets_its_own_folder(compose_cfg):
    cfg = compose_cfg()
    assert {k: cfg.optim[k.split(".")[1]] for k in PAPER} == PAPER  # the hashed defaults are the config's
    assert protocol_hash(cfg.optim) == "" and protocol_hash(None) == ""
    names = {_name(compose_cfg(*o)) for o in [(), ("optim.base_lr=0.05",), ("optim.base_lr=0.025",),
                                             ("optim.momentum=0.8",), ("optim.milestones=[0.5,0.75]",),
                                             ("optim.warmup=always",), ("optim.warmup_epochs=2",)]}
    assert len(names) == 7  # presets that differ only in warm-up never share a folder either
    hydra_cfg = compose_train("optim.base_lr=0.05", hydra=True).hydra
    suffix = "_s0_" + protocol_hash({"base_lr": 0.05})
    assert hydra_cfg.run.dir.endswith(suffix) and hydra_cfg.sweep.subdir.endswith(suffix)  # train.yaml passes optim
    assert protocol_hash({"base_lr": 0.1, "weight_decay": 0.0001}) == ""  # the paper's values written out


def test_a_proxy_run_with_another_augmentation_gets_its_own_folder_and_report_group(tmp_path):
    """A pilot that changes the proxy's data protocol (a stronger jitter, augmented val copies) never
    shares a folder or a report table with the committed sweep; the committed sweep keeps its name."""
    proxy = ("experiment=fig1_batch_size_proxy",)
    assert compose_train(*proxy).data.augment == PROXY_AUGMENT  # the reference is the preset's own
    changes = [(), ("data.augment.contrast=3",), ("data.augment.brightness=0.3",), ("data.augment.noise=1.0",),
               ("data.augment.rotate=0",), ("data.augment_val=4",), ("data.augment.contrast=3", "data.augment_val=4")]
    dirs = [compose_train(*proxy, *c, hydra=True).hydra.run.dir for c in changes]
    assert len(set(dirs)) == len(changes)
    assert dirs[0].endswith("_s0_" + protocol_hash(compose_train(*proxy).optim))  # the committed proxy: optimizer only
    same = compose_train(*proxy, "data.augment.contrast=1.0", "data.augment.noise=0.2", hydra=True).hydra.run.dir
    assert same == dirs[0]  # the reference values written out (1.0 for the preset's 1) are no departure
    assert compose_train("data.augment=null", hydra=True).hydra.run.dir.endswith("_s0")  # the plain data set
    for seed, change in enumerate(changes[:2]):  # the report: one table per protocol
        cfg = compose_train(*proxy, *change)
        record = fake_run(tmp_path, data="digits", norm="bn", batch=32, seed=seed) / "config.yaml"
        saved = yaml.safe_load(record.read_text())
        saved.update(data=OmegaConf.to_container(cfg.data), optim=OmegaConf.to_container(cfg.optim))
        record.write_text(yaml.safe_dump(saved))
    assert load_runs(tmp_path).protocol.nunique() == 2


def test_lower_precision_runs_get_their_own_folder_and_report_group(tmp_path):
    """bf16/fp16 change results (gnrepro.engine.execution): never the fp32 run's folder or table."""
    assert compose_train().precision == "fp32"
    names = [compose_train(f"precision={p}", hydra=True).hydra.run.dir for p in ("fp32", "bf16", "fp16")]
    assert names[0].endswith("_s0") and names[1] == names[0] + "_bf16" and names[2] == names[0] + "_fp16"
    hashed = compose_train("precision=bf16", "optim.base_lr=0.05", hydra=True).hydra.sweep.subdir
    assert hashed.endswith("_s0_bf16_" + protocol_hash({"base_lr": 0.05}))
    assert "precision" in PROTOCOL and not is_runtime("precision")


def test_identity_settings_are_never_runtime_keys_and_the_report_groups_by_protocol(tmp_path):
    assert not any(is_runtime(s.key) for s in SETTINGS) and RUNTIME_KEYS
    assert "protocol" in PROTOCOL
    fake_run(tmp_path, norm="bn", batch=32)
    runs = load_runs(tmp_path)
    assert list(runs.protocol) == [""]


def test_one_status_vocabulary_for_plan_report_and_resume(tmp_path):
    folders = {"pending": tmp_path / "a", "partial": fake_run(tmp_path, norm="bn", batch=2, status="incomplete"),
               "complete": fake_run(tmp_path, norm="bn", batch=4), "failed": fake_run(tmp_path, norm="bn", batch=8,
                                                                                     status="failed")}
    folders["pending"].mkdir()
    (folders["pending"] / "config.yaml").write_text((folders["complete"] / "config.yaml").read_text())
    damaged = fake_run(tmp_path, norm="bn", batch=16)
    (damaged / "summary.json").write_text('{"status": "running"}')  # not a status a run writes
    listed = dict(zip(load_runs(tmp_path).folder, load_runs(tmp_path).status))
    for status, folder in folders.items():
        assert runfiles.run_status(folder).status == status == plan.run_status(folder) == listed[str(folder)]
    assert runfiles.run_status(damaged).status == runfiles.DAMAGED == listed[str(damaged)]
    assert plan.run_status(damaged) == "damaged (summary.json: status 'running' is not one of complete, failed)"
    with pytest.raises(runfiles.DamagedFile):
        runfiles.read_summary(damaged)  # the trainer (resume) refuses it with one line
