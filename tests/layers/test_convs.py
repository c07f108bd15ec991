"""Weight Standardization against its formula, in float64."""
import pytest
import torch
import torch.nn.functional as F

from gnrepro.layers.convs import build_conv
from gnrepro.errors import ConfigError


def test_ws_conv_matches_the_weight_standardization_formula():
    torch.manual_seed(0)
    conv = build_conv("ws", eps=1e-5)(6, 4, 3, stride=2, padding=1).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    w = conv.weight
    mu = w.mean(dim=(1, 2, 3), keepdim=True)
    var = ((w - mu) ** 2).mean(dim=(1, 2, 3), keepdim=True)  # biased variance over (in, kH, kW)
    w_hat = (w - mu) / torch.sqrt(var + 1e-5)
    expected = F.conv2d(x, w_hat, None, stride=2, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-10)
    # Standardized filters ignore the raw weights' offset and scale (up to eps's share of the variance).
    with torch.no_grad():
        conv.weight.mul_(7).add_(3)
    assert torch.allclose(conv(x), expected, rtol=1e-3, atol=1e-3)


def test_plain_conv_is_an_unbiased_conv2d():
    conv = build_conv("plain")(3, 8, 1, stride=1)
    assert type(conv) is torch.nn.Conv2d and conv.bias is None


def test_unknown_conv():
    with pytest.raises(ConfigError, match="unknown conv 'wx'"):
        build_conv("wx")


@pytest.mark.parametrize("bias, dilation, groups", [(True, 1, 1), (False, 2, 1), (True, 2, 2), (False, 1, 3)])
def test_ws_conv_keeps_bias_dilation_and_groups(bias, dilation, groups):
    """VGG's WS convs keep a bias (torchvision's layout), and a WS conv is an ordinary conv in every
    other argument: float64 reference = F.conv2d with each filter standardized by hand."""
    torch.manual_seed(1)
    conv = build_conv("ws", eps=1e-5)(6, 6, 3, padding=2, bias=bias, dilation=dilation, groups=groups).double()
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 6, 7, 7, dtype=torch.double)
    w = conv.weight.detach()
    flat = w.flatten(1)
    std_w = ((flat - flat.mean(1, keepdim=True)) / (flat.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()).view_as(w)
    expected = F.conv2d(x, std_w, conv.bias, 1, 2, dilation, groups)
    torch.testing.assert_close(conv(x), expected, rtol=1e-10, atol=1e-10)


def test_convs_carry_no_bias_and_ws_defaults_to_the_official_eps():
    """Every conv of the ResNets is followed by a norm, so the factories build them without a bias;
    WS's eps defaults to the official implementation's 1e-5 (the config's conv.eps)."""
    plain, ws = build_conv("plain")(3, 4, 3), build_conv("ws")(3, 4, 3)
    assert plain.bias is None and ws.bias is None and ws.eps == 1e-5
    with pytest.raises(ConfigError) as err:
        build_conv("std")
    assert str(err.value) == "unknown conv 'std'; choose one of: plain, ws"
