"""Layouts that stay put (issue 23, item 4): under channels_last, per-worker BN, GN (LN, IN) and the WS
conv return channels_last, with the paper's math unchanged (Sec. 3.1 and 4.1).

Two kinds of checks. The math: every layer on a channels_last input against an independent float64
reference (torch's nn.GroupNorm / nn.BatchNorm2d per worker, or the formula). The strides on CUDA,
without a GPU: tensors of torch's FakeTensorMode on device "cuda" carry no data; their ops run
torch's meta kernels and decompositions registered for CUDA, which report the strides the CUDA
kernels return (torch's own cross-reference tests keep the two in step). This proves what torch's
registrations say a CUDA run would return for each layer's forward, not that a CUDA kernel ran;
each stride test has a negative control (the torch path these layers replace loses channels_last),
so it can fail. The backward's strides and the speed need a GPU (scripts/device_check.py).
"""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import StdConv2d
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from gnrepro.layers.batch_renorm import PerWorkerBatchRenorm2d
from gnrepro.layers.convs import build_conv, standardize
from gnrepro.layers.norm_registry import build_norm
from gnrepro.layers.norms import GroupNorm
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d, fold, split
from gnrepro.models.build import norm_factory
from gnrepro.models.resnet import ResNet

CL = torch.channels_last


def channels_last(t: torch.Tensor) -> bool:
    """channels_last and not (ambiguously) also NCHW-contiguous: a real claim about the strides."""
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


def data(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x * torch.linspace(0.5, 4.0, shape[0], dtype=torch.float64).view(-1, 1, 1, 1) + 1.5  # own stats per image


def randomize_affine(layer):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g, dtype=layer.weight.dtype) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=layer.bias.dtype))
    return layer


# ---------------------------------------------------------------------------------------- the math

@pytest.mark.parametrize("name,groups", [("gn", 4), ("gn", 16), ("ln", 1), ("in", 16)])
def test_group_norm_on_channels_last_equals_torch_group_norm_in_float64(name, groups):
    """GN/LN/IN from the registry on a channels_last input: nn.GroupNorm's output and gradients
    (input, gamma, beta) on the NCHW input, in float64, and a channels_last output. Fails if the
    groups were formed across the wrong channels (the view's order) or the variance were unbiased."""
    options = {"groups": groups} if name == "gn" else {}
    ours = randomize_affine(build_norm(name, 16, **options).double())
    ref = randomize_affine(nn.GroupNorm(groups, 16, eps=1e-5).double())
    x = data(4, 16, 5, 3)
    x1 = x.contiguous(memory_format=CL).requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = ours(x1)
    want = ref(x2)
    assert channels_last(out)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    grad = data(4, 16, 5, 3, seed=1)
    out.backward(grad)
    want.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=1e-10)
    # The negative control: another G gives another output (the comparison can fail).
    other = nn.GroupNorm(2 if groups != 2 else 4, 16).double()
    assert not torch.allclose(other(x), F.group_norm(x, groups), atol=1e-3)


def test_group_norm_float32_channels_last_is_as_close_to_float64_as_torch_kernel():
    """float32 on channels_last: within float32 rounding of the float64 formula (Eq. 1-2, 7), like
    torch's own kernel on NCHW."""
    x = data(2, 32, 7, 7)
    mean = x.view(2, 8, -1).mean(-1, keepdim=True)
    var = x.view(2, 8, -1).var(-1, unbiased=False, keepdim=True)
    formula = ((x.view(2, 8, -1) - mean) / torch.sqrt(var + 1e-5)).view_as(x)
    ours = GroupNorm(32, 8)(x.float().contiguous(memory_format=CL)).double()
    torch_kernel = F.group_norm(x.float(), 8).double()
    err, torch_err = (ours - formula).abs().max().item(), (torch_kernel - formula).abs().max().item()
    assert err < 1e-5 and err < 10 * torch_err + 1e-6, (err, torch_err)


@pytest.mark.parametrize("workers,per_worker", [(8, 2), (2, 3)])
def test_per_worker_bn_on_channels_last_equals_each_workers_batch_norm_in_float64(workers, per_worker):
    """The split path (channels_last) against torch's BatchNorm2d on each worker's images alone
    (image p is worker p % n's): outputs, input/gamma/beta gradients, running statistics (the average
    of the workers' own updates, over two steps) and the eval output; the output stays channels_last.
    Fails if a worker's statistics mixed in another's images (the worker_of layout), if the variance
    used to normalize were unbiased, or if the running variance were the biased one."""
    c = 6
    layer = randomize_affine(PerWorkerBatchNorm2d(c, workers=workers).double().train())
    refs = [randomize_affine(nn.BatchNorm2d(c).double().train()) for _ in range(workers)]
    for step in range(2):
        x = data(workers * per_worker, c, 3, 4, seed=step)
        x1 = x.contiguous(memory_format=CL).requires_grad_(True)
        out = layer(x1)
        assert channels_last(out)
        chunks = [x[k::workers].clone().requires_grad_(True) for k in range(workers)]
        want = [ref(chunk) for ref, chunk in zip(refs, chunks)]
        for k in range(workers):
            torch.testing.assert_close(out[k::workers], want[k], rtol=0, atol=1e-12)
        grad = data(workers * per_worker, c, 3, 4, seed=10 + step)
        out.backward(grad)
        for k in range(workers):
            want[k].backward(grad[k::workers])
            torch.testing.assert_close(x1.grad[k::workers], chunks[k].grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.weight.grad, sum(r.weight.grad for r in refs), rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.bias.grad, sum(r.bias.grad for r in refs), rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.running_mean, torch.stack([r.running_mean for r in refs]).mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, torch.stack([r.running_var for r in refs]).mean(0), rtol=0, atol=1e-12)
    assert int(layer.num_batches_tracked) == 2
    layer.eval()
    x = data(workers * per_worker, c, 3, 4, seed=7)
    evaluated = layer(x.contiguous(memory_format=CL))
    expected = ((x - layer.running_mean.view(1, -1, 1, 1)) / torch.sqrt(layer.running_var.view(1, -1, 1, 1) + 1e-5)
                * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(evaluated, expected.detach(), rtol=0, atol=1e-12)
    # The negative control: one BN over the whole batch is not per-worker BN.
    assert not torch.allclose(F.batch_norm(x, None, None, training=True), layer.train()(x), atol=1e-3)


def test_per_worker_bn_gives_the_same_float32_results_in_both_layouts():
    """NCHW (fold + fused kernel) and channels_last (split + elementwise) give the same float32
    results and running statistics: the two paths are one layer."""
    a, b = PerWorkerBatchNorm2d(8, workers=4), PerWorkerBatchNorm2d(8, workers=4)
    for step in range(3):
        x = data(8, 8, 4, 4, seed=step).float()
        torch.testing.assert_close(b(x.contiguous(memory_format=CL)), a(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.running_mean, a.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.running_var, a.running_var, rtol=1e-6, atol=1e-6)


def test_per_worker_bn_with_one_value_per_channel_is_refused_like_torch_batch_norm():
    """One image of 1x1 per worker has no variance: the split path refuses it as F.batch_norm does."""
    x = torch.randn(2, 8, 1, 1)[:, ::2]  # not NCHW-contiguous: the split path
    assert not x.is_contiguous()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        PerWorkerBatchNorm2d(4, workers=2).train()(x)
    PerWorkerBatchNorm2d(4, workers=2).train()(torch.randn(2, 8, 1, 2)[:, ::2])  # two values: fine


@pytest.mark.parametrize("r_max,d_max", [(1.5, 0.5), (1.0, 0.0)])
def test_batch_renorm_on_channels_last_equals_the_nchw_layer(r_max, d_max):
    """BRN (per-worker statistics corrected by r, d) gives the same outputs and running statistics for
    both layouts, over two steps in float64, and keeps channels_last."""
    a = PerWorkerBatchRenorm2d(6, workers=4, r_max=r_max, d_max=d_max).double()
    b = PerWorkerBatchRenorm2d(6, workers=4, r_max=r_max, d_max=d_max).double()
    for layer in (a, b):
        layer.running_mean.fill_(0.3)
        layer.running_var.fill_(2.0)
    for step in range(2):
        x = data(8, 6, 3, 3, seed=step)
        out = b(x.contiguous(memory_format=CL))
        assert channels_last(out)
        torch.testing.assert_close(out, a(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(b.running_var, a.running_var, rtol=0, atol=1e-12)


def test_split_is_a_view_for_channels_last_and_fold_is_not():
    """Why the split path exists: ``fold`` merges the worker and channel dims, a view only for NCHW."""
    x = torch.randn(8, 4, 3, 3).contiguous(memory_format=CL)
    assert split(x, 4).data_ptr() == x.data_ptr() and split(x, 4)._base is x
    assert fold(x, 4)._base is None  # a copy
    assert fold(x.contiguous(), 4)._base is not None


def test_ws_standardization_keeps_the_weight_layout_and_equals_timm_in_float64():
    """The WS conv's standardized weight: timm's StdConv2d standardization (batch_norm over (1, O, -1))
    in float64, with the weight's channels_last strides; timm's own returns NCHW for a channels_last
    weight (the copy this replaces: the negative control)."""
    conv = build_conv("ws")(6, 8, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(data(8, 6, 3, 3, seed=3))
    weight = conv.weight.detach().contiguous(memory_format=CL)
    timm_way = F.batch_norm(weight.reshape(1, 8, -1), None, None, training=True, momentum=0.0,
                            eps=conv.eps).reshape_as(weight)
    ours = standardize(weight, conv.eps)
    torch.testing.assert_close(ours, timm_way, rtol=0, atol=1e-12)
    assert channels_last(ours) and not channels_last(timm_way)
    ref = StdConv2d(6, 8, 3, padding=1, eps=conv.eps).double()
    ref.load_state_dict(conv.state_dict())
    x = data(2, 6, 5, 5)
    torch.testing.assert_close(conv(x.contiguous(memory_format=CL)), ref(x), rtol=0, atol=1e-10)


# ------------------------------------------------------------------- strides on CUDA, fake tensors

@pytest.fixture
def fake_cuda():
    """Fake CUDA tensors (no GPU involved): modules built inside have fake CUDA parameters."""
    with FakeTensorMode(), torch.device("cuda"):
        yield


def fake_input(*shape):
    x = torch.empty(*shape).contiguous(memory_format=CL)
    assert isinstance(x, FakeTensor) and x.device.type == "cuda"  # CUDA's registrations, not the CPU's
    return x


@pytest.mark.parametrize("name,options", [("bn", {"workers": 8}), ("bn", {"workers": 1}), ("brn", {"workers": 8}),
                                          ("gn", {"groups": 32}), ("ln", {}), ("in", {})])
def test_every_norm_returns_channels_last_on_cuda(fake_cuda, name, options):
    """Figure 1's one-device emulation (2 images x 8 workers) and GN/LN/IN, training and eval."""
    layer = build_norm(name, 64, **options)
    x = fake_input(16, 64, 7, 7)
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        assert channels_last(layer(x)), (name, mode, layer(x).stride())


def test_torch_group_norm_and_the_fold_lose_channels_last_on_cuda(fake_cuda):
    """The negative controls: the paths replaced here return NCHW strides for a channels_last CUDA
    input (torch's GroupNorm; per-worker BN through ``fold``; timm's WS standardization)."""
    x = fake_input(16, 64, 7, 7)
    assert not channels_last(F.group_norm(x, 32)) and F.group_norm(x, 32).is_contiguous()
    assert not channels_last(nn.GroupNorm(32, 64)(x))
    bn = PerWorkerBatchNorm2d(64, workers=8).train()
    folded = bn.normalize_folded(fold(x, 8), bn.weight.repeat(8), bn.bias.repeat(8)).reshape(x.shape)
    assert not channels_last(folded)
    weight = torch.empty(64, 64, 3, 3).contiguous(memory_format=CL)
    assert not channels_last(F.batch_norm(weight.reshape(1, 64, -1), None, None, training=True).reshape_as(weight))


def test_the_ws_conv_keeps_its_weight_and_output_channels_last_on_cuda(fake_cuda):
    conv = build_conv("ws")(64, 64, 3, padding=1)
    conv.weight = nn.Parameter(conv.weight.contiguous(memory_format=CL))
    assert channels_last(standardize(conv.weight, conv.eps))
    assert channels_last(conv(fake_input(4, 64, 7, 7)))


@pytest.mark.parametrize("norm,conv,torch_gn", [("bn", "plain", False), ("gn", "plain", False), ("gn", "ws", False),
                                                ("gn", "plain", True)])
def test_every_layer_of_a_channels_last_resnet_returns_channels_last_on_cuda(fake_cuda, norm, conv, torch_gn):
    """ResNet-14 at 2 images x 8 workers (BN) / 16 images (GN, GN+WS), 32x32 input on fake CUDA:
    every conv and norm output is channels_last. The negative control (``torch_gn``): the same net
    with torch's nn.GroupNorm returns NCHW from every norm layer, which this test then must see."""
    if torch_gn:
        factory = lambda c: nn.GroupNorm(32, c)  # noqa: E731
    else:
        factory = norm_factory({"name": norm, **({"groups": 32} if norm == "gn" else {})}, workers=8)
    model = ResNet(depth=14, norm=factory, conv=build_conv(conv), num_classes=10, small_input=True).train()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight = nn.Parameter(m.weight.contiguous(memory_format=CL))
    layouts = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: layouts.__setitem__(name, channels_last(o)))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm))]
    model(fake_input(16, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(layouts) > 30
    lost = [name for name, kept in layouts.items() if not kept]
    if torch_gn:
        norms = {name for name in layouts if "bn" in name or "downsample.1" in name}
        assert norms <= set(lost), lost  # every torch GN output is NCHW (and the convs after it follow)
    else:
        assert not lost, lost


def test_batch_renorm_schedule_reads_nothing_from_the_device_and_matches_limits():
    """With a relaxation schedule BRN's limits are computed on the device (``limit_tensors``); they
    equal the host rule ``limits()`` at every step, and a forward never reads a tensor on the host
    (the read that broke torch.compile's graph and synced every layer of every step)."""
    layer = PerWorkerBatchRenorm2d(4, workers=2, relax_start=2, relax_steps=3)
    x = data(4, 4, 3, 3).float()
    for _ in range(7):
        r, d = layer.limit_tensors()
        assert (r.item(), d.item()) == pytest.approx(layer.limits())
        layer(x)
    with FakeTensorMode(), torch.device("cuda"):  # a host read raises DataDependentOutputException here
        fake = PerWorkerBatchRenorm2d(64, workers=8, relax_start=2, relax_steps=3).train()
        assert channels_last(fake(fake_input(16, 64, 7, 7)))
