"""VGG-16 (gnrepro.models.vgg) against torchvision's own vgg16 / vgg16_bn: same state dict, same outputs;
GN in the same layout; norm=none only for VGG."""
import pytest
import torch
import torchvision

from gnrepro.models.build import build_model
from gnrepro.settings.validate import validate
from gnrepro.errors import ConfigError
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d


def _ours(compose_cfg, norm, **model):
    overrides = [f"model.{k}={v}" for k, v in model.items()]
    cfg = compose_cfg("model=vgg16", f"norm={norm}", "data=imagenet", "data.root=/d", "workers=1", *overrides)
    validate(cfg)
    return build_model(cfg, num_classes=10, in_channels=3)


@pytest.mark.parametrize("norm, reference", [("none", torchvision.models.vgg16), ("bn", torchvision.models.vgg16_bn)])
def test_vgg16_equals_torchvision_with_the_same_weights(compose_cfg, norm, reference):
    torch.manual_seed(0)
    ref = reference(weights=None, num_classes=10)
    ours = _ours(compose_cfg, norm)
    ref_sd = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_sd), "same module indices and parameter names"
    ours.load_state_dict(ref_sd)
    x = torch.randn(2, 3, 32, 32)  # 32 -> 1 px after 5 pools; the adaptive pool brings it back to 7x7
    ref.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    if norm == "bn":  # training mode too (one worker: plain BN), same dropout draws
        ref.train(), ours.train()
        torch.manual_seed(1)
        a = ref(x)
        torch.manual_seed(1)
        b = ours(x)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert isinstance(ours.features[1], PerWorkerBatchNorm2d)


def test_vgg16_gn_layout_names_and_small_proxy(compose_cfg):
    ours = _ours(compose_cfg, "gn", classifier_width=16, pool_size=1)
    assert ours.layer_aliases["conv5_3"] == "features.40" and ours.layer_aliases["conv1_1"] == "features.0"
    assert isinstance(ours.features[41], torch.nn.GroupNorm) and ours.features[41].num_groups == 32
    assert ours.classifier[0].in_features == 512
    plain = torchvision.models.vgg16(weights=None)
    assert _ours(compose_cfg, "none").layer_aliases["conv5_3"] == "features.28"
    assert isinstance(plain.features[28], torch.nn.Conv2d) and plain.features[28].in_channels == 512


def test_small_input_pools_round_up_so_10px_survives(compose_cfg):
    cfg = compose_cfg("model=vgg16", "norm=gn", "model.classifier_width=8", "model.pool_size=1")
    assert cfg.data.name == "digits" and cfg.model.small_input
    model = build_model(cfg, num_classes=10, in_channels=1)
    assert model(torch.randn(2, 1, 10, 10)).shape == (2, 10)


def test_norm_none_is_for_vgg_only(compose_cfg):
    with pytest.raises(ConfigError, match="norm=none .* is for VGG only"):
        validate(compose_cfg("norm=none"))


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_norm_none_on_resnet_is_one_line_on_the_command_line(run_cli, tmp_path):
    proc = run_cli("norm=none", "epochs=1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gnrepro: error: norm=none"), proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.yaml"))


def test_linear_layers_start_from_normal_0_001_and_zero_bias(compose_cfg):
    """torchvision's VGG initialisation of the classifier: N(0, 0.01) weights, zero biases."""
    torch.manual_seed(5)
    model = _ours(compose_cfg, "gn", classifier_width=256, pool_size=2)
    weights = torch.cat([m.weight.flatten() for m in model.classifier if isinstance(m, torch.nn.Linear)])
    n = weights.numel()  # ~590k samples: the mean's standard error is 1.3e-5, the std's 9e-6
    assert abs(weights.mean().item()) < 6 * 0.01 / n ** 0.5
    assert abs(weights.std().item() - 0.01) < 6 * 0.01 / (2 * n) ** 0.5
    assert all(not m.bias.any() for m in model.classifier if isinstance(m, torch.nn.Linear))
