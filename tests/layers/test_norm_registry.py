"""The norm registry: every norm= config file is what the registry says it is, and each choice's
run-folder tag and display label."""
import pytest

from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import (
    NORM_KINDS,
    NORMS,
    build_norm,
    norm_label,
    norm_tag,
    preset,
)

# Written out by hand (not derived from the registry): the tag and label of each norm= file.
EXPECTED = {"bn": ("bn", "BN"), "brn": ("brn", "BRN"), "gn": ("gn32", "GN"), "ln": ("ln", "LN"), "in": ("in", "IN"),
            "none": ("none", "no norm"), "gn_ws": ("gn32-ws", "GN+WS"), "bn_ws": ("bn-ws", "BN+WS"),
            "frozen_bn": ("frozenbn", "BN* (frozen)")}


def test_every_norm_file_is_listed_and_is_what_preset_says(compose_cfg, configs_dir):
    files = sorted(p.stem for p in (configs_dir / "norm").glob("*.yaml"))
    assert files == sorted(EXPECTED)
    for choice in files:
        cfg = compose_cfg(f"norm={choice}")
        norm, conv = preset(choice)
        assert cfg.norm.name == norm["name"] and cfg.conv.name == conv, choice
        assert bool(cfg.norm.get("frozen")) == bool(norm.get("frozen")), choice
        assert (norm_tag(cfg.norm, cfg.conv), norm_label(norm_tag(cfg.norm, cfg.conv))) == EXPECTED[choice]


@pytest.mark.parametrize("norm, label", [({"name": "gn", "groups": 8}, ("gn8", "GN")),
                                         ({"name": "gn", "channels_per_group": 16}, ("gn_c16", "GN")),
                                         ({"name": "bn", "sync": True}, ("syncbn", "SyncBN")),
                                         ({"name": "bn", "eval_stats": "precise"}, ("bn-precise", "BN, precise stats"))])
def test_variants_tags_and_labels(norm, label):
    tag = norm_tag(norm, {"name": "plain"})
    assert (tag, norm_label(tag)) == label
    assert norm_label("something-else") == "something-else"


def test_kinds_agree_with_the_layers_they_build():
    for name in NORMS:
        layer = build_norm(name, 64, workers=2)
        assert (layer is not None) == NORM_KINDS[name].layer
        assert hasattr(layer, "workers") == NORM_KINDS[name].batch_stats, name  # only they split per worker
    with pytest.raises(ConfigError, match="norm 'ln' has no groups"):
        build_norm("ln", 64, groups=8)
    with pytest.raises(ConfigError, match="norm 'gn' has no r_max; those apply to norm=brn only"):
        build_norm("gn", 64, r_max=2.0)
