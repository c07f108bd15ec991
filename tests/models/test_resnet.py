"""Backbones: torchvision's layout, the paper's initialisation, every norm x conv builds and trains."""
from functools import partial

import pytest
import torch
import torchvision
from torch import nn

from gnrepro.layers.convs import build_conv
from gnrepro.layers.norm_registry import build_norm
from gnrepro.models.resnet import Bottleneck, ResNet


def make(depth=50, norm="bn", conv="plain", **kw):
    return ResNet(depth, partial(build_norm, norm), build_conv(conv), **kw)


# ResNet-101 differs from ResNet-50 only in layer3's block count: its copies (seconds each) run in the
# slow suite, keeping the quick loop under its budget (docs/testing.md).
@pytest.mark.parametrize("depth,tv", [(50, torchvision.models.resnet50),
                                      pytest.param(101, torchvision.models.resnet101, marks=pytest.mark.slow)])
def test_same_architecture_and_outputs_as_torchvision(depth, tv):
    ours, ref = make(depth), tv()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ours(x), ref(x))


def test_stride_sits_on_the_3x3_conv():
    block = make().layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv3.stride == (1, 1)


def test_initialisation_follows_the_protocol():
    torch.manual_seed(0)
    model = make(norm="gn")
    for m in model.modules():
        if isinstance(m, Bottleneck):
            assert torch.all(m.bn3.weight == 0) and torch.all(m.bn1.weight == 1) and torch.all(m.bn2.weight == 1)
            assert torch.all(m.bn3.bias == 0)
    w = model.layer3[0].conv2.weight  # 3x3, 256 out: fan_out = 256 * 9
    assert abs(w.std().item() - (2.0 / (256 * 9)) ** 0.5) < 0.05 * (2.0 / (256 * 9)) ** 0.5


def test_parameter_counts_are_equal_across_norms():
    counts = {n: sum(p.numel() for p in make(norm=n).parameters()) for n in ("bn", "gn", "ln", "in")}
    assert len(set(counts.values())) == 1, counts
    assert counts["bn"] == sum(p.numel() for p in torchvision.models.resnet50().parameters())


# Seconds each: BN, GN and GN+WS on ResNet-50 stay in the quick loop; the other norms (LN and IN are GN
# with other groups, tests/test_protocol.py checks every norm's layers) and ResNet-101 run in the slow suite.
QUICK_PAIRS = {("bn", "plain"), ("gn", "plain"), ("gn", "ws")}


@pytest.mark.parametrize("depth,norm,conv", [
    pytest.param(depth, norm, conv, marks=() if depth == 50 and (norm, conv) in QUICK_PAIRS else pytest.mark.slow)
    for depth in (50, 101)
    for norm, conv in [("bn", "plain"), ("gn", "plain"), ("ln", "plain"), ("in", "plain"), ("gn", "ws"), ("bn", "ws")]])
def test_every_norm_runs_forward_and_backward(depth, norm, conv):
    torch.manual_seed(0)
    model = make(depth, norm, conv, num_classes=5, in_channels=1, small_input=True)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_small_input_stem_keeps_resolution():
    model = make(small_input=True, in_channels=1)
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (3, 3) and model.conv1.padding == (1, 1)
    x = torch.randn(2, 1, 10, 10)
    assert model.relu(model.bn1(model.conv1(x))).shape == (2, 64, 10, 10)  # 10 px in, 10 px out of the stem
    assert model.layer4(model.layer3(model.layer2(model.layer1(model.conv1(x))))).shape[-2:] == (2, 2)
    full = make()
    assert full.conv1.kernel_size == (7, 7) and full.conv1.stride == (2, 2) and full.conv1.padding == (3, 3)


def test_an_unknown_depth_is_one_line_naming_the_choices():
    from gnrepro.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        make(depth=34)
    assert str(err.value) == "unknown ResNet depth 34; choose one of: [14, 26, 50, 101]"


def test_per_worker_bn_reaches_every_layer():
    model = ResNet(50, partial(build_norm, "bn", workers=4), build_conv("plain"))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 53 and all(m.workers == 4 for m in bns)


@pytest.mark.parametrize("depth,blocks", [(26, [2, 2, 2, 2]), (14, [1, 1, 1, 1])])
def test_proxy_resnets_are_timms_bottleneck_resnets(depth, blocks):
    """The proxy's ResNet-26 (2-2-2-2 bottlenecks, the paper's widths; timm's resnet26) and ResNet-14
    (1-1-1-1) match timm's bottleneck ResNet with those blocks parameter for parameter, and give the
    same outputs with the same weights."""
    from timm.models.resnet import Bottleneck as TimmBottleneck
    from timm.models.resnet import ResNet as TimmResNet

    ours, ref = make(depth), TimmResNet(TimmBottleneck, blocks)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
