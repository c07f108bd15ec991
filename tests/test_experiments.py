"""Experiment presets (configs/experiment/), launcher presets and the dry run (gnrepro.plan): every
sweep of the paper composes, expands to the paper's runs, and command-line overrides still win."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gnrepro.settings.validate import validate
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.plan import format_plan, plan
from gnrepro.resources import CONFIGS
from gnrepro.settings.preflight import sweep_jobs as expand
from gnrepro.runfiles import write_json

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))

# preset -> (data, model, workers, the set of (norm tag, images per worker) it sweeps)
EXPECTED = {
    "fig1_batch_size": ("imagenet", "resnet50", 8, {(t, b) for t in ("bn", "gn32") for b in (32, 16, 8, 4, 2)}),
    "fig1_batch_size_proxy": ("digits", "resnet26", 1, {(t, b) for t in ("bn", "gn32") for b in (32, 16, 8, 4, 2)}),
    "table1_norms_proxy": ("digits", "resnet26", 1, {(t, 32) for t in ("bn", "ln", "in", "gn32")}),
    "table3_groups_proxy": ("digits", "resnet26", 1, {(f"gn{g}", 32) for g in (64, 32, 16, 8, 4, 2, 1)}),
    "table1_norms": ("imagenet", "resnet50", 8, {(t, 32) for t in ("bn", "ln", "in", "gn32")}),
    "table3_groups": ("imagenet", "resnet50", 8, {(f"gn{g}", 32) for g in (64, 32, 16, 8, 4, 2, 1)}),
    "table3_channels": ("imagenet", "resnet50", 8, {(f"gn_c{c}", 32) for c in (64, 32, 16, 8, 4, 2, 1)}),
    "resnet101": ("imagenet", "resnet101", 8, {(t, b) for t in ("bn", "gn32") for b in (32, 2)}),
    "pets_ws": ("pets", "resnet50", 1, {(t, b) for t in ("bn", "gn32", "gn32-ws") for b in (4, 1)}),
    "batch_renorm": ("imagenet", "resnet50", 8, {(t, 4) for t in ("bn", "brn", "gn32")}),
    "vgg16": ("imagenet", "vgg16", 8, {(t, 32) for t in ("none", "bn", "gn32")}),
    "fig1_precise_bn": ("imagenet", "resnet50", 8, {("bn-precise", b) for b in (32, 16, 8, 4, 2)}),
    "fig1_precise_bn_proxy": ("digits", "resnet26", 1, {("bn-precise", b) for b in (32, 16, 8, 4, 2)}),
    "pets_transfer": ("pets", "resnet50", 1, {(t, b) for t in ("bn", "frozenbn", "gn32", "gn32-ws") for b in (4, 1)}),
}
# Presets that start from released ImageNet models: 224 px RGB only, so no digits proxy.
PRETRAINED = {"pets_transfer"}


def compose_jobs(*overrides):
    """The composed config of every job ``python -m gnrepro.train -m <overrides>`` would launch."""
    jobs = expand(list(overrides))
    cfgs = []
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name="train", overrides=job)
            if OmegaConf.is_missing(cfg.data, "root"):  # data on disk: composition only here
                cfg = compose(config_name="train", overrides=[*job, "data.root=/data"])
            cfgs.append(cfg)
    return cfgs


def test_every_preset_is_tested():
    assert set(PRESETS) == set(EXPECTED)


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_and_expands_to_the_papers_runs(name):
    data, model, workers, settings = EXPECTED[name]
    cfgs = compose_jobs(f"experiment={name}")
    for cfg in cfgs:
        OmegaConf.resolve(cfg)
        validate(cfg)
        assert "???" not in OmegaConf.to_yaml(cfg)
        assert (cfg.data.name, cfg.model.name, cfg.workers) == (data, model, workers)
        if data == "imagenet":
            assert cfg.epochs == 100 and cfg.optim.base_lr == 0.1  # the paper's protocol by default
    got = [(norm_tag(c.norm, c.conv), c.batch) for c in cfgs]
    assert sorted(got) == sorted(settings), "each setting exactly once"


@pytest.mark.parametrize("name", [n for n in PRESETS if EXPECTED[n][0] != "digits" and n not in PRETRAINED])
def test_data_digits_turns_a_preset_into_a_proxy_with_the_proxy_epochs(name):
    cfgs = compose_jobs(f"experiment={name}", "data=digits")
    assert {c.data.name for c in cfgs} == {"digits"} and {c.epochs for c in cfgs} == {15}
    assert len(cfgs) == len(EXPECTED[name][3])


PROXIES = ["fig1_batch_size_proxy", "table1_norms_proxy", "table3_groups_proxy"]


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_every_proxy_sweep_uses_one_protocol_for_every_run():
    """Figure 1, Table 1 and Table 3 on digits: every run of every proxy sweep shares one protocol
    (configs/proxy/digits.yaml); nothing but the swept setting and the seed differs."""
    cfgs = [c for name in PROXIES for c in compose_jobs(f"experiment={name}", "seed=0,1,2")]
    assert len(cfgs) == 3 * (10 + 4 + 7)

    def protocol(c):
        swept = {"norm", "batch", "seed"}
        return OmegaConf.to_yaml(OmegaConf.masked_copy(c, [k for k in c if k not in swept]), resolve=True)

    assert len({protocol(c) for c in cfgs}) == 1, "no run of a proxy sweep may be tuned on its own"
    c = cfgs[0]
    assert c.data.augment is not None and c.data.subset is None and c.optim.base_lr == 0.1
    assert c.model.name == "resnet26" and c.optim.warmup == "always"
    assert c.optim.warmup_epochs < c.optim.milestones[0] * c.epochs, "the warm-up must end before the first drop"
    assert {(c.norm.name, c.batch) for c in cfgs} >= {("bn", 2), ("gn", 32), ("ln", 32), ("in", 32)}


def test_precise_bn_proxy_shares_the_proxy_figure1_protocol_and_only_changes_evaluation():
    def protocol(c):
        return (c.workers, c.epochs, c.data.subset, c.optim.warmup, c.optim.warmup_epochs, c.norm.name, c.batch)
    base = {protocol(c) for c in compose_jobs("experiment=fig1_batch_size_proxy") if c.norm.name == "bn"}
    precise = compose_jobs("experiment=fig1_precise_bn_proxy")
    assert {protocol(c) for c in precise} == base and {c.norm.eval_stats for c in precise} == {"precise"}


def test_new_presets_keep_the_papers_settings():
    (brn, *_) = [c for c in compose_jobs("experiment=batch_renorm") if c.norm.name == "brn"]
    assert (brn.norm.r_max, brn.norm.d_max, brn.norm.relax_start, brn.norm.relax_steps) == (1.5, 0.5, 0, 0)
    vgg = compose_jobs("experiment=vgg16")
    assert {(c.model.classifier_width, c.model.pool_size, c.probe.layer) for c in vgg} == {(4096, 7, "conv5_3")}
    assert all(c.probe.every_steps > 0 for c in vgg)
    (default,) = compose_jobs("data=digits")
    assert default.probe.every_steps == 0 and default.norm.eval_stats == "running", "off by default"


def test_command_line_overrides_win_and_seeds_add_repeats():
    cfgs = compose_jobs("experiment=fig1_batch_size", "data=digits", "batch=4,2", "seed=0,1,2", "workers=2")
    assert len(cfgs) == 2 * 2 * 3
    assert {(c.norm.name, c.batch, c.seed) for c in cfgs} == {
        (n, b, s) for n in ("bn", "gn") for b in (4, 2) for s in (0, 1, 2)}
    assert {c.workers for c in cfgs} == {2}
    (single,) = compose_jobs("experiment=table1_norms", "norm=gn", "data=digits")
    assert single.norm.name == "gn"


def test_channels_per_group_sweep_leaves_groups_null():
    for cfg in compose_jobs("experiment=table3_channels"):
        assert cfg.norm.groups is None and cfg.norm.channels_per_group in (64, 32, 16, 8, 4, 2, 1)


def test_launcher_presets_compose():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=fig1_batch_size", "data.root=/d",
                                                      "hydra/launcher=joblib"], return_hydra_config=True)
        assert "joblib" in cfg.hydra.launcher._target_
        cfg = compose(config_name="train", overrides=["experiment=fig1_batch_size", "data.root=/d",
                                                      "hydra/launcher=slurm"], return_hydra_config=True)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_
    assert cfg.hydra.launcher.gpus_per_node == 8 and cfg.hydra.launcher.nodes == 1
    assert cfg.hydra.launcher.timeout_min >= 24 * 60


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_dry_run_lists_runs_status_and_cost_without_training(tmp_path):
    overrides = ["experiment=fig1_batch_size", "seed=0,1"]
    runs = plan(overrides, throughput=400.0, root=tmp_path)
    assert len(runs) == 20 and not any(tmp_path.iterdir()), "a dry run writes nothing"
    assert {r.status for r in runs} == {"pending"}
    first = runs[0]
    assert first.folder == tmp_path / "outputs/runs/imagenet_resnet50/bn_b32x8_e100_s0"
    assert first.images == 100 * 1_281_167
    assert first.gpu_hours == pytest.approx(first.images / 400.0 / 3600)

    # statuses come from the run folders: complete, failed, partial (metrics but no summary)
    write_json(_mk(runs[0].folder) / "summary.json", {"status": "complete", "final_error": 24.1})
    write_json(_mk(runs[1].folder) / "summary.json", {"status": "failed"})
    (_mk(runs[2].folder) / "metrics.jsonl").write_text('{"epoch": 1, "val_error": 80.0}\n')
    again = plan(overrides, root=tmp_path)
    assert [r.status for r in again[:4]] == ["complete", "failed", "partial", "pending"]
    text = format_plan(again, 400.0)
    assert "20 runs, 1 complete, 19 to run" in text and "GPU-hours at 400 images/s" in text


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_dry_run_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gnrepro.plan", "experiment=fig1_batch_size_proxy", "seed=0,1",
                           "--throughput", "1000"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "digits_resnet26/gn32_b2x1_e14_s1" in proc.stdout and "20 runs" in proc.stdout


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_pets_transfer_starts_each_norm_from_its_own_released_model_under_one_protocol():
    cfgs = compose_jobs("experiment=pets_transfer")
    inits = {norm_tag(c.norm, c.conv): c.init for c in cfgs}
    assert inits == {"bn": "tv-resnet50", "frozenbn": "tv-resnet50", "gn32": "R-50-GN", "gn32-ws": "R-50-GN-WS"}
    protocols = {(c.epochs, c.optim.base_lr, c.optim.warmup, tuple(c.optim.milestones), c.data.train_crop,
                  c.data.eval_resize, c.data.eval_crop) for c in cfgs}
    assert protocols == {(30, 0.01, "never", (0.3, 0.6, 0.9), 224, 256, 224)}
