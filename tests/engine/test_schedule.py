"""The paper's optimization protocol: linear LR scaling, /10 at 30/60/90%, warm-up only above 0.1."""
import pytest
import torch
from omegaconf import OmegaConf

from gnrepro.engine.schedule import build_optimizer, build_scheduler, lr_factor, scaled_lr

OPTIM = OmegaConf.create({"base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                          "milestones": [0.3, 0.6, 0.9], "warmup_epochs": 5})


@pytest.mark.parametrize("batch,lr", [(32, 0.1), (16, 0.05), (8, 0.025), (4, 0.0125), (2, 0.00625), (64, 0.2)])
def test_linear_scaling_rule(batch, lr):
    assert scaled_lr(0.1, batch) == pytest.approx(lr)


def _lrs(batch, epochs=100, steps=3):
    model = torch.nn.Linear(2, 2)
    opt, lr = build_optimizer(model, OPTIM, batch)
    sched = build_scheduler(opt, OPTIM, lr, steps, epochs)
    per_step = []
    for _ in range(epochs * steps):
        per_step.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return per_step, opt


def test_lr_divided_by_10_at_epochs_30_60_90_of_100():
    lrs, opt = _lrs(32)
    first_of = lambda epoch: lrs[epoch * 3]  # noqa: E731
    assert first_of(0) == pytest.approx(0.1) and first_of(29) == pytest.approx(0.1)
    assert first_of(30) == pytest.approx(0.01) and first_of(59) == pytest.approx(0.01)
    assert first_of(60) == pytest.approx(0.001) and first_of(90) == pytest.approx(0.0001)
    group = opt.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4


def test_weight_decay_covers_every_parameter_including_gamma_and_beta():
    from functools import partial

    from gnrepro.layers.convs import build_conv
    from gnrepro.layers.norm_registry import build_norm
    from gnrepro.models.resnet import ResNet

    model = ResNet(50, partial(build_norm, "gn"), build_conv("plain"), num_classes=3)
    opt, _ = build_optimizer(model, OPTIM, 32)
    in_opt = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters()}


def test_no_warmup_at_or_below_the_reference_lr_and_linear_warmup_above():
    lrs, _ = _lrs(2, epochs=10)
    assert lrs[0] == pytest.approx(0.00625)
    lrs, _ = _lrs(64, epochs=100)
    warm = 5 * 3
    # The authors' code: linear, step by step, from the reference LR 0.1 (not from 0) to 0.2 over 5 epochs.
    assert lrs[:warm] == pytest.approx([0.1 + 0.1 * s / warm for s in range(warm)])
    assert lrs[warm] == pytest.approx(0.2)


def test_decays_fall_mid_epoch_when_epochs_are_few():
    factors = [lr_factor(s, 10, 1, [0.3, 0.6, 0.9], 0) for s in range(10)]
    assert factors == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001])


def test_warmup_can_be_forced_for_every_run_or_switched_off():
    always = OmegaConf.merge(OPTIM, {"warmup": "always", "warmup_epochs": 2})
    model = torch.nn.Linear(2, 2)
    opt, lr = build_optimizer(model, always, 8)
    sched = build_scheduler(opt, always, lr, 4, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:8] == pytest.approx([0.025 * (i + 1) / 8 for i in range(8)]) and lrs[8] == pytest.approx(0.025)
    never = OmegaConf.merge(OPTIM, {"warmup": "never"})
    opt, lr = build_optimizer(model, never, 64)
    build_scheduler(opt, never, lr, 4, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_unfused_sgd_make_the_same_updates(fused):
    """optim.fused only changes the kernel: the paper's SGD (momentum, weight decay on every
    parameter) computed in float64 by hand gives the same weights after a few steps."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ref = {k: v.detach().double().clone() for k, v in model.named_parameters()}
    momentum = {k: torch.zeros_like(v) for k, v in ref.items()}
    cfg = OmegaConf.merge(OPTIM, {"fused": fused})
    opt, lr = build_optimizer(model, cfg, 32)
    assert bool(opt.defaults.get("fused")) == fused
    for step in range(3):
        x = torch.randn(5, 4)
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
        w, b = ref["weight"], ref["bias"]
        xd = x.double()
        y = xd @ w.T + b
        grads = {"weight": 2 * y.T @ xd, "bias": 2 * y.sum(0)}
        for k in ref:
            g = grads[k] + cfg.weight_decay * ref[k]
            momentum[k] = g if step == 0 else cfg.momentum * momentum[k] + g
            ref[k] = ref[k] - lr * momentum[k]
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6)


def test_fused_rejects_a_non_boolean():
    from gnrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.fused"):
        build_optimizer(torch.nn.Linear(2, 2), OmegaConf.merge(OPTIM, {"fused": "maybe"}), 32)


@pytest.mark.parametrize("warmup_start", [None, 0.25])
def test_an_lr_drop_inside_the_warmup_multiplies_the_ramp(warmup_start):
    """Short runs (the proxies' few epochs) can put the first /10 inside the warm-up: both apply, the
    drop times the ramp, never the ramp alone."""
    steps, epochs, warmup_epochs = 10, 10, 5  # the 30% drop lands at step 30, inside the 50-step ramp
    for step in (29, 30, 45):
        ramp = (step + 1) / 50 if warmup_start is None else warmup_start + (1 - warmup_start) * step / 50
        drop = 0.1 if step >= 30 else 1.0
        assert lr_factor(step, steps, epochs, [0.3, 0.6, 0.9], warmup_epochs, warmup_start) == pytest.approx(
            drop * ramp, rel=1e-12)


def test_fused_auto_is_fused_exactly_where_torch_has_the_kernel():
    """optim.fused=auto: torch's fused SGD for float parameters on CPU (and CUDA, see test_cuda.py),
    the multi-kernel path elsewhere (a meta-device model stands for a device without the kernel)."""
    opt, _ = build_optimizer(torch.nn.Linear(4, 3), OPTIM, 32)  # OPTIM has no fused key: auto
    assert opt.defaults["fused"] is True
    with torch.device("meta"):
        elsewhere = torch.nn.Linear(4, 3)
    opt, _ = build_optimizer(elsewhere, OmegaConf.merge(OPTIM, {"fused": "auto"}), 32)
    assert not opt.defaults["fused"]


def test_warmup_refusal_names_the_value():
    from gnrepro.errors import ConfigError

    opt, lr = build_optimizer(torch.nn.Linear(2, 2), OPTIM, 64)
    with pytest.raises(ConfigError) as err:
        build_scheduler(opt, OmegaConf.merge(OPTIM, {"warmup": "sometimes"}), lr, 10, 100)
    assert str(err.value) == "optim.warmup must be auto, always or never, got 'sometimes'"
