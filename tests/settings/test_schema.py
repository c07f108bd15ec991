"""The pydantic schema itself: its norm options come from the norm registry (adding a norm is one
registry entry plus its yaml), and every kind of mistake is one line naming the key, the value and a
valid example. The command-line cases (the same mistakes through ``python -m gnrepro.train``) are in
tests/test_bad_inputs.py."""
import dataclasses
import importlib
import math

import pytest

from gnrepro.errors import ConfigError
from gnrepro.layers import norm_registry
from gnrepro.settings import schema


def test_the_norm_options_are_the_registrys():
    assert schema.options("norm") == list(norm_registry.NORM_KINDS)


def test_a_new_norm_is_one_registry_entry(monkeypatch, compose_cfg):
    """A grouped norm added to the registry alone is accepted with its groups keys and nothing else."""
    gn = norm_registry.NORM_KINDS["gn"]
    monkeypatch.setitem(norm_registry.NORM_KINDS, "xgn", dataclasses.replace(gn, label="xGN"))
    fresh = importlib.reload(schema)
    try:
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(compose_cfg("norm=gn"), resolve=True)
        cfg["norm"]["name"] = "xgn"
        assert fresh.check(cfg) == []
        cfg["norm"]["sync"] = False
        with pytest.raises(ConfigError, match=r"^norm 'xgn' has no sync \(its keys: name, groups, channels_per_group\)"):
            fresh.check(cfg)
    finally:
        monkeypatch.undo()
        importlib.reload(schema)
    assert "xgn" not in schema.options("norm")


@pytest.mark.parametrize("key,value,line", [
    ("batch", True, "batch must be a positive integer, got True; set e.g. batch=2"),
    ("batch", 2.0, "batch must be a positive integer, got 2.0"),
    ("optim.base_lr", -math.inf, "optim.base_lr must be a finite number > 0, got -inf; set e.g. optim.base_lr=0.1"),
    ("optim.base_lr", "0.1", "optim.base_lr must be a finite number > 0, got '0.1'"),
    ("optim.momentum", True, "optim.momentum must be a finite number in [0, 1), got True"),
    ("optim.fused", 1, "optim.fused must be one of auto, true, false, got 1; set e.g. optim.fused=auto"),
    ("optim.milestones", [0.3, math.nan], "optim.milestones must be a list of numbers, each a finite number in (0, 1), strictly increasing"),
    ("data.subset", "???", "data.subset is not set; set e.g. data.subset=2"),
    ("norm.name", ["bn"], "unknown norm.name ['bn']; choose one of: bn, brn, gn, ln, in, none"),
    ("norm", 3, "norm must be a config group, got 3; pick one with norm=<option>"),
    ("optim", [], "optim must hold the keys base_lr, momentum, weight_decay, milestones, warmup_epochs, warmup, fused, got []"),
    ("device", "cuda:x", "device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ("results_dir", "  ", "results_dir must be a non-empty string, got '  '"),
    ("probe.percentiles", [1, "x"], "probe.percentiles must be a list of numbers, each a finite number >= 0, got [1, 'x']"),
])
def test_each_mistake_is_one_line_naming_key_value_and_example(compose_cfg, key, value, line):
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(compose_cfg("norm=gn"), resolve=True)
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(ConfigError) as err:
        schema.check(cfg)
    assert str(err.value).startswith(line) and "\n" not in str(err.value), str(err.value)


def test_a_key_missing_from_a_group_names_the_option_and_the_file(compose_cfg):
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(compose_cfg("norm=gn", "experiment=fig1_batch_size_proxy"), resolve=True)
    del cfg["data"]["augment"]["rotate"]
    with pytest.raises(ConfigError, match=r"^data.augment.rotate is missing from the config \(data.augment\)"):
        schema.check(cfg)
    del cfg["norm"]["groups"]
    with pytest.raises(ConfigError, match=r"^norm.groups is missing from the config \(norm=gn\); restore it"):
        schema.check(cfg)


@pytest.mark.parametrize("line", [
    ["a=1,2", "b=x,y", "c=3"], ["seed=range(0,3)", "norm=bn,gn", "+x=1"], ["a=1", "a=2,3", "b=4"],
    ["a=choice(1,2)", "c=sort(3,1,2)", "d=[1,2]"], ["x='a,b'", "y=${z}"], [],
])
def test_a_sweep_expands_as_hydras_basic_sweeper_launches_it(line):
    """gnrepro expands sweeps through Hydra's public Override API; Hydra's own sweeper is the reference."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference only, never imported by gnrepro
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gnrepro.settings.preflight import expand

    parser = OverridesParser.create()
    (reference,) = BasicSweeper.split_arguments(parser.parse_overrides(line), None)
    assert expand(parser.parse_overrides(line)) == reference
