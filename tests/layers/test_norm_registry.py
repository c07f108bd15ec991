"""The norm registry: every norm= config file is what the registry says it is, and each choice's
run-folder tag and display label."""
import pytest
import torch

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


# --- every layer the registry builds takes the configured eps, and every refusal says exactly what -----
# (mutation testing found these unpinned: a builder that dropped eps passed while the configs said 1e-5)

def _reference_forward(name, x, eps):
    """What ``name`` computes on ``x`` in training mode, from torch's functional layers in float64."""
    import torch.nn.functional as F

    xd, c = x.double(), x.shape[1]
    if name in ("bn", "brn", "sync", "frozen"):  # brn at its first step: running stats 0/1 clip r, d to BN's
        if name == "frozen":  # frozen BN normalizes with its (initial) running statistics
            return F.batch_norm(xd, torch.zeros(c, dtype=torch.double), torch.ones(c, dtype=torch.double),
                                training=False, eps=eps)
        return F.batch_norm(xd, None, None, training=True, eps=eps)
    groups = {"gn": 2, "ln": 1, "in": c}[name]
    return F.group_norm(xd, groups, eps=eps)


@pytest.mark.parametrize("name", ["bn", "brn", "gn", "ln", "in", "sync", "frozen"])
def test_every_layer_kind_uses_the_configured_eps(name):
    eps = 0.5  # large beside the inputs' variance, so a layer that kept its own default 1e-5 is far off
    torch.manual_seed(0)
    x = torch.randn(4, 4, 3, 3) * 0.3
    options = {"gn": {"groups": 2}, "brn": {"r_max": 1.0, "d_max": 0.0}, "sync": {"sync": True},
               "frozen": {"frozen": True}}.get(name, {})
    layer = build_norm("bn" if name in ("sync", "frozen") else name, 4, eps=eps, **options)
    assert layer.eps == eps and layer.weight.shape == (4,)
    if name == "sync":  # SyncBatchNorm's forward needs a process group; its eps and width are what matter
        return
    torch.testing.assert_close(layer.train()(x).double(), _reference_forward(name, x, eps), rtol=1e-5, atol=1e-5)
    # the negative control: the same input at torch's default eps is measurably different
    assert not torch.allclose(layer(x).double(), _reference_forward(name, x, 1e-5), atol=1e-3)


@pytest.mark.parametrize("call, message", [
    (lambda: build_norm("bn", 8, sync=True, frozen=True),
     "norm.frozen=true and norm.sync=true exclude each other: frozen BN has no batch statistics"),
    (lambda: build_norm("gnx", 8), "unknown norm 'gnx'; choose one of: bn, brn, gn, ln, in, none"),
    (lambda: build_norm("gn", 8, sync=True), "norm.sync applies to norm=bn only, not 'gn'"),
    (lambda: build_norm("ln", 8, frozen=True), "norm.frozen applies to norm=bn only, not 'ln'"),
    (lambda: build_norm("brn", 8, groups=8),
     "norm 'brn' has no groups; norm.groups / norm.channels_per_group apply to norm=gn only"),
    (lambda: build_norm("gn", 8, r_max=2.0, d_max=1.0),
     "norm 'gn' has no d_max, r_max; those apply to norm=brn only"),
    (lambda: build_norm("gn", 8, zeta=1, alpha=2), "norm 'gn' has no alpha, zeta"),
])
def test_refusals_are_exact_one_line_messages(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert str(err.value) == message


def test_options_left_unset_or_false_are_not_given():
    """The config passes every key of its norm group; None and False mean "not given", so BN's
    variants switched off do not trip GN, while a variant switched on does (test above)."""
    layer = build_norm("gn", 8, groups=4, sync=False, frozen=False, channels_per_group=None)
    assert layer.num_groups == 4


def test_a_config_without_a_norm_name_is_tagged_with_a_question_mark():
    """Listings (plan, report) of a run folder whose config names no norm show "?" rather than fail."""
    assert norm_tag({}, {}) == "?" and norm_label("?") == "?"
    assert norm_tag({}, {"name": "ws"}) == "?-ws"
