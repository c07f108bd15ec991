"""Normalization layers against the seed example, float64 references and torch's own layers."""
import pytest
import torch
from torch import nn

from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import build_norm
from gnrepro.layers.norms import num_groups
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d

# Seed 001's worked example: N=3 images a, b, c with C=4, H=1, W=2.
SEED_X = torch.tensor([
    [[[2, 3]], [[5, 7]], [[11, 13]], [[17, 19]]],
    [[[0, 1]], [[1, 2]], [[3, 5]], [[8, 13]]],
    [[[1, 2]], [[3, 4]], [[5, 6]], [[7, 8]]],
], dtype=torch.float32)
# The normalized first image ``a`` as printed in the seed, per method.
SEED_A = {
    ("bn", None): [[0.522, 1.567], [0.676, 1.690], [1.071, 1.630], [1.066, 1.492]],
    ("ln", None): [[-1.276, -1.108], [-0.773, -0.439], [0.230, 0.565], [1.234, 1.568]],
    ("in", None): [[-1.0, 1.0]] * 4,
    ("gn", 2): [[-1.172, -0.651], [0.391, 1.432], [-1.265, -0.633], [0.633, 1.265]],
}


def reference_norm(x, dims_fn, eps=1e-5):
    """x_hat = (x - mu) / sqrt(var + eps) in float64, with mu/var over the set S_i chosen by dims_fn."""
    x = x.double()
    view, dims = dims_fn(x)
    xv = x.reshape(view)
    mu = xv.mean(dim=dims, keepdim=True)
    var = xv.var(dim=dims, unbiased=False, keepdim=True)
    return ((xv - mu) / torch.sqrt(var + eps)).reshape(x.shape)


def ref_bn(x):
    return reference_norm(x, lambda x: (x.shape, (0, 2, 3)))


def ref_gn(x, g):
    n, c, h, w = x.shape
    return reference_norm(x, lambda x: ((n, g, c // g, h, w), (2, 3, 4)))


@pytest.mark.parametrize("name,groups", list(SEED_A))
def test_seed_worked_example(name, groups):
    layer = build_norm(name, 4, groups=groups) if groups else build_norm(name, 4)
    layer.train()
    out = layer(SEED_X)
    expected = torch.tensor(SEED_A[(name, groups)]).reshape(4, 1, 2)
    # The seed prints 3 decimals (some truncated rather than rounded): agree to within 1e-3.
    assert torch.allclose(out[0], expected, atol=1e-3, rtol=0), out[0]


@pytest.mark.parametrize("name,groups,cpg", [
    ("bn", None, None), ("gn", 4, None), ("gn", None, 2), ("gn", None, None), ("ln", None, None), ("in", None, None),
])
def test_every_norm_matches_float64_reference(name, groups, cpg):
    torch.manual_seed(0)
    c = 64
    x = torch.randn(6, c, 5, 3) * 3 + 1
    layer = build_norm(name, c, groups=groups, channels_per_group=cpg).train()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    g = {"gn": num_groups(c, groups, cpg), "ln": 1, "in": c}.get(name)
    ref = ref_bn(x) if name == "bn" else ref_gn(x, g)
    ref = ref * layer.weight.double().view(1, -1, 1, 1) + layer.bias.double().view(1, -1, 1, 1)
    assert torch.allclose(layer(x).double(), ref, atol=1e-5)


def test_ln_and_in_are_group_norm_with_g1_and_gc():
    torch.manual_seed(1)
    x = torch.randn(2, 12, 4, 4)
    for name, groups in (("ln", 1), ("in", 12)):
        layer = build_norm(name, 12)
        assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups
        assert layer.weight.shape == (12,)  # per-channel affine, unlike nn.LayerNorm's per-element one
        ref = nn.GroupNorm(groups, 12, eps=1e-5)
        assert torch.allclose(layer(x), ref(x), atol=1e-6)


def test_gn_default_is_32_groups_and_eps_1e5():
    layer = build_norm("gn", 256)
    assert layer.num_groups == 32 and layer.eps == 1e-5
    assert build_norm("gn", 256, channels_per_group=16).num_groups == 16
    assert build_norm("bn", 8).eps == 1e-5


def test_group_count_must_divide_channels():
    with pytest.raises(ConfigError) as err:
        build_norm("gn", 64, groups=48)
    msg = str(err.value)
    assert "48" in msg and "64 channels" in msg and "1, 2, 4, 8, 16, 32, 64" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="channels_per_group=3 .* 64 channels"):
        build_norm("gn", 64, channels_per_group=3)
    with pytest.raises(ConfigError, match="exactly one"):
        build_norm("gn", 64, groups=32, channels_per_group=2)
    with pytest.raises(ConfigError, match="unknown norm 'xn'"):
        build_norm("xn", 64)


def _slices(x, workers):
    """Each worker's images: image i of a step belongs to worker i % workers."""
    return [x[k::workers] for k in range(workers)]


def _per_slice_running_stats(x, workers):
    """Running mean/var that a plain BatchNorm2d on each worker's slice accumulates after one step."""
    layers = [nn.BatchNorm2d(x.shape[1]) for _ in range(workers)]
    for bn, chunk in zip(layers, _slices(x, workers)):
        bn(chunk)
    return [bn.running_mean for bn in layers], [bn.running_var for bn in layers]


@pytest.mark.parametrize("workers", [2, 4])
def test_per_worker_bn_equals_bn_on_each_slice(workers):
    torch.manual_seed(2)
    c, b = 8, 3
    x = torch.randn(workers * b, c, 4, 5) * 2 + 0.5
    layer = PerWorkerBatchNorm2d(c, workers=workers).train()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    w2 = layer.weight.detach().clone().requires_grad_(True)
    b2 = layer.bias.detach().clone().requires_grad_(True)
    out1 = layer(x1)
    # Plain BN on each worker's images, sharing gamma/beta so their gradients sum over the workers.
    out2 = torch.empty_like(out1)
    for k, chunk in enumerate(_slices(x2, workers)):
        out2[k::workers] = nn.functional.batch_norm(chunk, None, None, w2, b2, training=True, eps=1e-5)
    assert torch.allclose(out1, out2, atol=1e-5)
    grad = torch.randn_like(out1)
    out1.backward(grad)
    out2.backward(grad)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, w2.grad, atol=1e-4)
    assert torch.allclose(layer.bias.grad, b2.grad, atol=1e-4)
    # Running statistics: the average of what each worker's own BN accumulated.
    means, variances = _per_slice_running_stats(x, workers)
    assert torch.allclose(layer.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(layer.running_var, torch.stack(variances).mean(0), atol=1e-6)
    # And it differs from one BN over the whole step (the test can fail).
    whole = nn.BatchNorm2d(c)
    with torch.no_grad():
        whole.weight.copy_(layer.weight)
        whole.bias.copy_(layer.bias)
    assert not torch.allclose(whole(x), out1, atol=1e-3)


def test_per_worker_bn_with_one_worker_is_plain_bn_and_eval_uses_running_stats():
    torch.manual_seed(3)
    x = torch.randn(6, 5, 3, 3)
    layer, plain = PerWorkerBatchNorm2d(5, workers=1), nn.BatchNorm2d(5)
    assert torch.allclose(layer(x), plain(x))
    assert torch.allclose(layer.running_var, plain.running_var)
    layer4 = PerWorkerBatchNorm2d(5, workers=3)
    layer4(x)
    layer4.eval()
    expected = (x - layer4.running_mean.view(1, -1, 1, 1)) / torch.sqrt(layer4.running_var.view(1, -1, 1, 1) + 1e-5)
    assert torch.allclose(layer4(x), expected, atol=1e-5)


def test_per_worker_bn_rejects_uneven_split():
    with pytest.raises(ValueError, match="7 images .* 2 workers"):
        PerWorkerBatchNorm2d(4, workers=2).train()(torch.randn(7, 4, 2, 2))
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        build_norm("bn", 4, workers=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"groups": 0}, "norm.groups must be a positive integer, got 0"),
    ({"channels_per_group": -2}, "norm.channels_per_group must be a positive integer, got -2"),
    ({"groups": 4, "channels_per_group": 8},
     "GN got both groups=4 and channels_per_group=8; set exactly one of norm.groups or norm.channels_per_group "
     "(the other to null)"),
    ({"groups": 3}, "GN with groups=3 cannot split a layer of 64 channels (G must divide C); valid norm.groups "
                    "for it: [1, 2, 4, 8, 16, 32, 64]"),
])
def test_group_count_refusals_name_the_key_and_the_valid_values(kwargs, message):
    with pytest.raises(ConfigError) as err:
        num_groups(64, **kwargs)
    assert str(err.value) == message


def test_gn_without_affine_has_no_gamma_beta():
    from gnrepro.layers.norms import GroupNorm

    assert GroupNorm(8, 2, affine=False).weight is None and GroupNorm(8, 2).weight.shape == (8,)


@pytest.mark.parametrize("name", ["gn", "bn"])
def test_16_bit_channels_last_input_keeps_its_dtype_and_float32_statistics(name):
    """bf16 activations in channels_last (the layout-preserving paths): the output is bf16 in the
    input's layout and equals torch's float32 kernel on the same values, rounded once to bf16."""
    import torch.nn.functional as F

    torch.manual_seed(2)
    layer = build_norm(name, 8, **({"groups": 4} if name == "gn" else {"workers": 2})).train()
    x = (torch.randn(4, 8, 3, 3) * 3 + 1).to(torch.bfloat16).to(memory_format=torch.channels_last)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    xf = x.float().contiguous()
    if name == "gn":
        ref = F.group_norm(xf, 4, eps=1e-5)
    else:  # worker k holds images k, k+2 (gnrepro.layers.per_worker_bn.worker_of)
        ref = torch.empty_like(xf)
        for k in range(2):
            ref[k::2] = F.batch_norm(xf[k::2], None, None, training=True, eps=1e-5)
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=0.04)  # a few bf16 steps at |y| <= 4


def test_gn_under_autocast_in_channels_last_computes_in_float32():
    torch.manual_seed(3)
    layer = build_norm("gn", 8, groups=2)
    x = torch.randn(2, 8, 3, 3).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.to(torch.bfloat16))
    assert y.dtype == torch.float32
    import torch.nn.functional as F
    torch.testing.assert_close(y, F.group_norm(x.to(torch.bfloat16).float(), 2, eps=1e-5), rtol=1e-5, atol=1e-5)
