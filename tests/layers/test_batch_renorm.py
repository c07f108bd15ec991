"""Batch Renorm (gnrepro.layers.batch_renorm): plain per-worker BN at r_max = 1, d_max = 0, and the BRN
formulas of Ioffe 2017 (float64 reference, r and d constants in the backward pass) otherwise."""
import pytest
import torch

from gnrepro.layers.batch_renorm import PerWorkerBatchRenorm2d
from gnrepro.settings.validate import validate
from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import build_norm
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d

C = 3


def _pair(workers, **brn):
    torch.manual_seed(0)
    bn = PerWorkerBatchNorm2d(C, workers=workers)
    brn_layer = PerWorkerBatchRenorm2d(C, workers=workers, **brn)
    with torch.no_grad():
        for m in (bn, brn_layer):
            m.weight.copy_(torch.tensor([1.5, -0.7, 0.3]))
            m.bias.copy_(torch.tensor([0.2, 0.1, -0.4]))
            m.running_mean.copy_(torch.tensor([0.3, -0.2, 1.0]))
            m.running_var.copy_(torch.tensor([0.5, 2.0, 1.3]))
    return bn, brn_layer


def _run(layer, x, g):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * g).sum().backward()
    return y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_brn_with_r_max_1_and_d_max_0_is_per_worker_bn(workers):
    bn, brn = _pair(workers, r_max=1.0, d_max=0.0)
    torch.manual_seed(1)
    x, g = torch.randn(4 * workers, C, 3, 2) * 2 + 1, torch.randn(4 * workers, C, 3, 2)
    for a, b in zip(_run(bn, x, g), _run(brn, x, g)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_mean, brn.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, brn.running_var, rtol=0, atol=0)
    bn.eval(), brn.eval()
    torch.testing.assert_close(bn(x), brn(x), rtol=0, atol=0)


def reference(x, gamma, beta, rmean, rvar, workers, r_max, d_max, eps=1e-5):
    """BRN in float64 on each worker's images (image i is worker i % workers), Ioffe 2017 Alg. 1."""
    out = torch.empty_like(x)
    new_mean, new_var = torch.zeros_like(rmean), torch.zeros_like(rvar)
    sigma = (rvar + eps).sqrt().view(1, -1, 1, 1)
    for k in range(workers):
        xk = x[k::workers]
        mu = xk.mean(dim=(0, 2, 3), keepdim=True)
        var = xk.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        sigma_b = (var + eps).sqrt()
        r = (sigma_b / sigma).clamp(1 / r_max, r_max).detach()
        d = ((mu - rmean.view(1, -1, 1, 1)) / sigma).clamp(-d_max, d_max).detach()
        out[k::workers] = gamma.view(1, -1, 1, 1) * ((xk - mu) / sigma_b * r + d) + beta.view(1, -1, 1, 1)
        n = xk.numel() / xk.shape[1]
        new_mean += (0.9 * rmean + 0.1 * mu.flatten().detach()) / workers
        new_var += (0.9 * rvar + 0.1 * var.flatten().detach() * n / (n - 1)) / workers
    return out, new_mean, new_var


@pytest.mark.parametrize("workers", [1, 2])
def test_brn_matches_a_float64_reference_forward_backward_and_running_stats(workers):
    _, brn = _pair(workers, r_max=1.5, d_max=0.5)
    torch.manual_seed(2)
    # spread the batch statistics so some r and d are clipped and some are not
    x = torch.randn(3 * workers, C, 4, 3) * torch.tensor([0.3, 3.0, 1.1]).view(1, C, 1, 1) + torch.tensor(
        [2.0, -1.5, 1.1]).view(1, C, 1, 1)
    g = torch.randn_like(x)
    rm, rv = brn.running_mean.clone().double(), brn.running_var.clone().double()
    y, gx, gw, gb = _run(brn, x, g)

    xd = x.double().requires_grad_(True)
    gamma = brn.weight.detach().double().requires_grad_(True)
    beta = brn.bias.detach().double().requires_grad_(True)
    ref, mean, var = reference(xd, gamma, beta, rm, rv, workers, 1.5, 0.5)
    (ref * g.double()).sum().backward()
    torch.testing.assert_close(y.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), xd.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw.double(), gamma.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb.double(), beta.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(brn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(brn.running_var.double(), var, rtol=1e-5, atol=1e-6)
    # the test means something: BRN differs from BN here
    bn, _ = _pair(workers)
    assert not torch.allclose(_run(bn, x, g)[0], y, atol=1e-3)


def test_relaxation_schedule_starts_as_bn_and_reaches_the_limits():
    layer = PerWorkerBatchRenorm2d(C, r_max=3.0, d_max=5.0, relax_start=2, relax_steps=4)
    seen = []
    for _ in range(8):
        seen.append(layer.limits())
        layer.num_batches_tracked.add_(1)
    assert seen[:2] == [(1.0, 0.0), (1.0, 0.0)]
    assert seen[2] == pytest.approx((1.5, 1.25)) and seen[5:] == [(3.0, 5.0)] * 3
    assert PerWorkerBatchRenorm2d(C).limits() == (1.5, 0.5)  # the GN paper's setting from step 1


def test_build_norm_and_config_checks(compose_cfg):
    layer = build_norm("brn", 8, workers=2, r_max=2.0, d_max=0.0)
    assert isinstance(layer, PerWorkerBatchRenorm2d) and layer.workers == 2 and layer.r_max == 2.0
    with pytest.raises(ConfigError, match="apply to norm=brn only"):
        build_norm("bn", 8, r_max=2.0)
    with pytest.raises(ConfigError, match="norm.r_max must be a finite number >= 1"):
        validate(compose_cfg("norm=brn", "norm.r_max=0.5"))
    with pytest.raises(ConfigError, match="norm.relax_steps must be an integer >= 0"):
        validate(compose_cfg("norm=brn", "norm.relax_steps=-1"))


def test_eps_and_momentum_reach_the_layer():
    """BRN's eps and momentum are its own, not BN's defaults: the running statistics move by the given
    momentum and evaluation divides by sqrt(running_var + eps)."""
    layer = PerWorkerBatchRenorm2d(C, eps=0.5, momentum=0.3)
    torch.manual_seed(3)
    x = torch.randn(6, C, 2, 2) * 0.2 + 1.0
    layer(x)
    mean = x.double().mean(dim=(0, 2, 3))
    var = x.double().var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(layer.running_mean.double(), 0.3 * mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(layer.running_var.double(), 0.7 + 0.3 * var, rtol=1e-5, atol=1e-7)
    layer.eval()
    expected = (x.double() - layer.running_mean.double().view(1, -1, 1, 1)) / (
        layer.running_var.double().view(1, -1, 1, 1) + 0.5).sqrt()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relax_start, relax_steps", [(3, 0), (2, 4), (0, 3)])
def test_relaxation_schedule_step_by_step_in_both_code_paths(relax_start, relax_steps):
    """(r_max, d_max) at the step about to run (1-based s): BN's (1, 0) while s <= relax_start, then a
    linear ramp over relax_steps steps (at once when 0). Python and on-device forms agree."""
    r_max, d_max = 2.0, 0.8
    layer = PerWorkerBatchRenorm2d(C, r_max=r_max, d_max=d_max, relax_start=relax_start, relax_steps=relax_steps)
    for s in range(1, 9):
        frac = (min(max((s - relax_start) / relax_steps, 0.0), 1.0) if relax_steps
                else float(s > relax_start))
        expected = (1.0 + frac * (r_max - 1.0), frac * d_max)
        assert layer.limits() == pytest.approx(expected, abs=1e-12), s
        r, d = layer.limit_tensors()
        assert (r.item(), d.item()) == pytest.approx(expected, abs=1e-6), s
        layer.num_batches_tracked.add_(1)


@pytest.mark.parametrize("r_max, d_max", [(1.5, 0.0), (2.0, 0.0), (1.0, 0.5), (1.0, 1.0), (1.5, 0.5), (3.0, 2.0)])
def test_either_limit_alone_renormalizes(r_max, d_max):
    """r_max > 1 with d_max = 0, or d_max > 0 with r_max = 1, is Batch Renorm, not BN: the float64
    reference of Ioffe 2017 with those limits, and a difference from BN on the same input."""
    _, brn = _pair(1, r_max=r_max, d_max=d_max)
    torch.manual_seed(4)
    x = torch.randn(6, C, 3, 3) * torch.tensor([0.2, 4.0, 1.0]).view(1, C, 1, 1) + torch.tensor(
        [2.5, -2.0, 0.4]).view(1, C, 1, 1)
    rm, rv = brn.running_mean.clone().double(), brn.running_var.clone().double()
    y = brn(x)
    ref, _, _ = reference(x.double(), brn.weight.detach().double(), brn.bias.detach().double(), rm, rv, 1,
                          r_max, d_max)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    bn, _ = _pair(1)
    assert not torch.allclose(bn(x), y, atol=1e-3)


def test_scheduled_limits_follow_the_layers_dtype():
    """A float64 layer (the float64 references of these tests) gets float64 limits, not float32-rounded."""
    layer = PerWorkerBatchRenorm2d(C, r_max=1.3, d_max=0.7, relax_start=1).double()
    layer.num_batches_tracked.add_(1)
    r, d = layer.limit_tensors()
    assert r.dtype == d.dtype == torch.float64 and (r.item(), d.item()) == (1.3, 0.7)
    ramp = PerWorkerBatchRenorm2d(C, r_max=1.3, d_max=0.7, relax_steps=3).double()
    assert ramp.limit_tensors()[0].dtype == torch.float64
