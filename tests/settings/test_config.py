"""Hydra composition of every config group, run names, and validation before any compute."""
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_train
from gnrepro.models.build import build_model
from gnrepro.settings.validate import validate
from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.resources import CONFIGS

ROOT = Path(__file__).resolve().parents[2]


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "norm", "conv", "data", "logger"])
def test_every_option_of_every_group_composes_and_validates(compose_cfg, group):
    assert options(group), group
    for option in options(group):
        pair = {("norm", "none"): ("model=vgg16",),  # no norm is for VGG only
                ("norm", "frozen_bn"): ("init=tv-resnet50", "data=pets")}.get((group, option), ())  # BN* fine-tunes
        cfg = compose_cfg(f"{group}={option}", *pair)
        if OmegaConf.is_missing(cfg.data, "root"):  # data sets on disk need a root; composition only here
            cfg = compose_cfg(f"{group}={option}", *pair, "data.root=/data")
        OmegaConf.resolve(cfg)
        validate(cfg)
        assert "???" not in OmegaConf.to_yaml(cfg)


def test_every_config_key_has_a_comment():
    """Every leaf key we define carries a short comment (Hydra's own ``hydra:`` and ``defaults:`` aside)."""
    key = re.compile(r"^(\s*)([A-Za-z_]\w*):\s*(\S.*)?$")
    for path in CONFIGS.rglob("*.yaml"):
        skip_indent = None
        for line in path.read_text().splitlines():
            m = key.match(line.split(" #")[0]) if not line.lstrip().startswith("#") else None
            if not m:
                continue
            indent, name, value = len(m.group(1)), m.group(2), m.group(3)
            if skip_indent is not None and indent > skip_indent:
                continue
            skip_indent = indent if name in ("hydra", "defaults") else None
            if skip_indent is None and value:
                assert "#" in line, f"{path.relative_to(ROOT)}: key without a comment: {line!r}"


def test_defaults_are_the_paper_baseline(compose_cfg):
    cfg = compose_cfg()
    assert cfg.norm.name == "bn" and not cfg.norm.sync
    assert cfg.batch == 32 and cfg.workers == 8 and cfg.final_epochs == 5
    assert cfg.optim.base_lr == 0.1 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    assert list(cfg.optim.milestones) == [0.3, 0.6, 0.9]
    assert cfg.model.depth == 50 and cfg.conv.name == "plain" and cfg.logger.name == "none"


def test_gn_ws_is_gn_composed_with_a_ws_conv(compose_cfg):
    cfg = compose_cfg("norm=gn_ws")
    assert cfg.norm.name == "gn" and cfg.conv.name == "ws"
    assert norm_tag(cfg.norm, cfg.conv) == "gn32-ws"
    model = build_model(cfg, 10, 1)
    assert type(model.layer1[0].conv2).__name__ == "WSConv2d" and model.layer1[0].bn2.num_groups == 32
    cfg = compose_cfg("norm=bn_ws")
    assert cfg.norm.name == "bn" and cfg.conv.name == "ws"


@pytest.mark.parametrize("overrides,tag", [
    ((), "bn"), (("norm=gn",), "gn32"), (("norm=gn", "norm.groups=8"), "gn8"),
    (("norm=gn", "norm.channels_per_group=16"), "gn_c16"), (("norm=ln",), "ln"), (("norm=in",), "in"),
    (("norm.sync=true",), "syncbn"),
])
def test_norm_tags(compose_cfg, overrides, tag):
    cfg = compose_cfg(*overrides)
    assert norm_tag(cfg.norm, cfg.conv) == tag


def test_run_dir_is_named_by_settings(compose_cfg):
    cfg = compose_train("norm=gn", "batch=2", "seed=3", "epochs=7", hydra=True)
    assert cfg.hydra.run.dir == "outputs/runs/digits_resnet50/gn32_b2x8_e7_s3"
    assert cfg.hydra.sweep.subdir == "digits_resnet50/gn32_b2x8_e7_s3"


def test_resnet101_and_per_worker_bn_from_config(compose_cfg):
    cfg = compose_cfg("model=resnet101", "workers=4")
    model = build_model(cfg, 10, 1)
    assert len(model.layer3) == 23 and model.bn1.workers == 4 and model.conv1.stride == (1, 1)


@pytest.mark.parametrize("override,needle", [
    ("batch=0", "batch must be a positive integer, got 0"),
    ("workers=-1", "workers must be a positive integer, got -1"),
    ("epochs=0", "epochs must be a positive integer, got 0"),
    ("batch=abc", "batch must be a positive integer, got 'abc'"),
    ("optim.base_lr=-1", "optim.base_lr must be a finite number > 0"),
    # the execution keys (gnrepro/engine/execution.py)
    ("precision=fp8", "precision must be one of fp32, tf32, bf16, fp16, got 'fp8'"),
    ("compile=max", "compile must be one of off, default, reduce-overhead"),
    ("log_every=0", "log_every must be a positive integer"),
    ("channels_last=maybe", "channels_last must be true or false"),
])
def test_validation_names_the_bad_value(compose_cfg, override, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(compose_cfg(override))
