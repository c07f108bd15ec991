"""The paper's protocol, item by item (Wu & He, "Group Normalization", ECCV 2018, Sec. 4.1;
docs/PROTOCOL.md), as the trainer builds it.

Every item is one ``check_*`` function holding an independent reference (the paper's or the authors'
definition, float64 arithmetic, torch's own layers) and one test that

1. runs the check on what the trainer really uses: the shipped config composed as
   ``python -m gnrepro.train`` composes it, turned into parts by ``gnrepro.train.build_parts`` or
   ``gnrepro.models.build.build_model``, so a wrong value in a config file, in the trainer's wiring
   or in a layer fails here;
2. runs the same check on plausible wrong variants (a negative control) and expects it to reject
   each one, so no check here can pass whatever the code does.

These tests are quick (no subprocess, tiny inputs) and stay in ``pytest -m "not slow"``: a planted
protocol bug fails the loop developers run all day.
"""
from __future__ import annotations

import math
import statistics
import warnings
from fractions import Fraction
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from conftest import compose_train, data_config
from gnrepro import train
from gnrepro.data.images import imagenet_transforms
from gnrepro.data.sampling import StepBatchSampler
from gnrepro.engine.distributed import Processes
from gnrepro.layers.norm_registry import build_norm
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d
from gnrepro.models.build import build_model
from gnrepro.models.resnet import Bottleneck
from gnrepro.runs.resume import RunState

# What the paper fixes (Sec. 4.1), written here from the paper and the authors' code, not read from gnrepro.
PAPER_LR, PAPER_BATCH = Fraction(1, 10), 32       # "0.1 x N/32" for N images per worker
WARMUP_EPOCHS = 5                                  # authors' code: only when the scaled LR exceeds 0.1
DROP_EPOCHS, EPOCHS = (30, 60, 90), 100            # LR / 10 at epochs 30, 60, 90 of 100
MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4
EPS = 1e-5
BN_MOMENTUM = 0.1                                  # torch's convention for Caffe2's 0.9 (docs/PROTOCOL.md)
FINAL_EPOCHS = 5                                   # "the median of the final 5 epochs"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def rejects(check, *args, **kwargs) -> None:
    """The negative control: ``check`` must fail on a wrong variant."""
    with pytest.raises(AssertionError):
        check(*args, **kwargs)


def trainer_parts(*overrides: str):
    """What ``python -m gnrepro.train <overrides>`` trains with (one process, CPU), and its config.
    The 1-1-1-1 proxy ResNet keeps it quick; every layer kind of ResNet-50 is in it."""
    cfg = compose_train("model=resnet14", "progress=false", *overrides)
    return train.build_parts(cfg, RunState(), Processes(), torch.device("cpu")), cfg


def step_lrs(scheduler, optimizer, steps: int) -> list[float]:
    """The LR each of the first ``steps`` optimizer steps uses, read from the real scheduler."""
    lrs = []
    with warnings.catch_warnings():  # stepping the scheduler without optimizer steps: torch warns, harmlessly
        warnings.simplefilter("ignore")
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return lrs


# --- learning rate: 0.1 x N / 32 for N images per worker -----------------------------------------------

def check_linear_scaling(lr_of) -> None:
    """``lr_of(batch, workers)``: the peak LR of a run. The paper scales with the images *per worker*,
    whatever the number of workers."""
    for batch, workers in [(2, 8), (4, 1), (8, 2), (32, 8), (32, 1), (64, 1)]:
        expected = float(PAPER_LR * batch / PAPER_BATCH)
        assert lr_of(batch, workers) == pytest.approx(expected, rel=1e-12, abs=0), (batch, workers)


def test_learning_rate_is_0_1_times_images_per_worker_over_32():
    def trainer_lr(batch, workers):
        parts, _ = trainer_parts(f"batch={batch}", f"workers={workers}")
        assert parts.lr == parts.optimizer.param_groups[0]["initial_lr"]
        return parts.lr

    check_linear_scaling(trainer_lr)
    rejects(check_linear_scaling, lambda n, w: 0.1 * n * w / 256)  # Goyal et al.'s rule on the whole step: right at 8 workers only
    rejects(check_linear_scaling, lambda n, w: 0.1 * math.sqrt(n / 32))  # square-root scaling
    rejects(check_linear_scaling, lambda n, w: 0.1)  # no scaling


# --- warm-up: only above 0.1, linear from 0.1 to the scaled LR over 5 epochs ----------------------------

def authors_lr(step: int, batch: int, steps_per_epoch: int) -> float:
    """The LR of optimizer step ``step`` (0-based) in the authors' code (GroupNorm-reproduce,
    imagenet-resnet-gn.py): the scaled LR, / 10 at epochs 30/60/90, and when it exceeds 0.1 a
    step-based linear ramp from 0.1 at step 0 to it at epoch 5."""
    peak = float(PAPER_LR * batch / PAPER_BATCH)
    lr = peak * 0.1 ** sum(step >= e * steps_per_epoch for e in DROP_EPOCHS)
    ramp = WARMUP_EPOCHS * steps_per_epoch
    if peak > PAPER_LR and step < ramp:
        lr = float(PAPER_LR) + (peak - float(PAPER_LR)) * step / ramp
    return lr


def check_warmup(lrs_of) -> None:
    """``lrs_of(batch, steps_per_epoch, steps)``: the per-step LRs of the first ``steps`` steps of a
    100-epoch run at ``batch`` images per worker; they must be the authors' LRs exactly."""
    spe = 3
    for batch in (16, 32, 64, 128):
        got = lrs_of(batch, spe, (WARMUP_EPOCHS + 1) * spe)
        want = [authors_lr(s, batch, spe) for s in range(len(got))]
        assert got == pytest.approx(want, rel=1e-12, abs=0), batch


def trainer_lrs(*overrides):
    def lrs_of(batch, spe, steps):
        # one worker and spe * batch train images: spe steps per epoch, 100 epochs as on ImageNet
        parts, _ = trainer_parts(f"batch={batch}", "workers=1", f"data.subset={spe * batch}", f"epochs={EPOCHS}",
                                 *overrides)
        assert parts.sampler.steps_per_epoch == spe
        return step_lrs(parts.scheduler, parts.optimizer, steps)
    return lrs_of


def test_warmup_only_above_0_1_and_linear_from_0_1_over_5_epochs():
    check_warmup(trainer_lrs())
    rejects(check_warmup, trainer_lrs("optim.warmup=always"))  # a warm-up at every batch size (the CPU proxy's)
    rejects(check_warmup, trainer_lrs("optim.warmup_epochs=4"))  # a ramp of the wrong length

    def from_zero(batch, spe, steps):  # Goyal-style ramp from ~0 instead of from the reference LR
        peak = 0.1 * batch / 32
        return [peak * min(1.0, (s + 1) / (5 * spe)) if peak > 0.1 else peak for s in range(steps)]
    rejects(check_warmup, from_zero)

    def at_or_above(batch, spe, steps):  # warm-up also at exactly 0.1 (from 0, as a ">=" would with the old ramp)
        peak = 0.1 * batch / 32
        return [peak * (s + 1) / (5 * spe) if peak >= 0.1 and s < 5 * spe else authors_lr(s, batch, spe)
                for s in range(steps)]
    rejects(check_warmup, at_or_above)


# --- LR / 10 at epochs 30, 60, 90 of 100 ----------------------------------------------------------------

def check_drops(lrs_of) -> None:
    """``lrs_of(steps_per_epoch)``: the per-step LRs of a whole 100-epoch run at 8 images per worker
    (no warm-up); the LR must fall by exactly 10x at the first step of epochs 31, 61 and 91."""
    spe = 7
    got = lrs_of(spe)
    assert len(got) == EPOCHS * spe
    assert got == pytest.approx([authors_lr(s, 8, spe) for s in range(len(got))], rel=1e-12, abs=0)


def test_lr_divided_by_10_at_the_first_step_of_epochs_31_61_91():
    assert compose_train("data=imagenet", "data.root=/unused").epochs == EPOCHS  # the paper's length on ImageNet

    def lrs_of(spe, *overrides):
        parts, _ = trainer_parts("batch=8", "workers=1", f"data.subset={spe * 8}", f"epochs={EPOCHS}", *overrides)
        return step_lrs(parts.scheduler, parts.optimizer, EPOCHS * spe)

    check_drops(lrs_of)
    rejects(check_drops, lambda spe: lrs_of(spe, "optim.milestones=[0.3,0.6,0.8]"))  # a wrong epoch
    rejects(check_drops, lambda spe: [authors_lr(max(s - 1, 0), 8, spe) for s in range(EPOCHS * spe)])  # one step late
    rejects(check_drops, lambda spe: [0.025 * 0.2 ** sum(s >= e * spe for e in DROP_EPOCHS)
                                      for s in range(EPOCHS * spe)])  # / 5 instead of / 10


# --- SGD, momentum 0.9, weight decay 1e-4 on every parameter (gamma and beta included) -----------------

def check_sgd(model: nn.Module, optimizer) -> None:
    """Three steps of ``optimizer`` on ``model`` move every parameter as the paper's SGD does,
    computed in float64: v = 0.9 v + g + 1e-4 w, w = w - lr v (torch's and Caffe2's form).

    Parameters start at random non-zero values (gamma starts at 1 or 0 and beta at 0, where decay
    would not show). Step 1 has a zero gradient, so only weight decay moves the weights (a parameter
    left out of the decay, or another rate, shows); step 2 a random one; step 3 a zero one again, so
    the move is 0.9 of the momentum (another momentum, Nesterov or dampening shows). The LR is set
    to 10 for the check, so that a decay step is far above float32 rounding; what is compared is
    each step's move, to a few float32 ulps."""
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters()]
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) + 2.0)
    lr = 10.0
    for group in optimizer.param_groups:
        group["lr"] = lr
    w = [p.detach().double().clone() for p in params]
    v = [torch.zeros_like(x) for x in w]
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen) if step == 1 else torch.zeros(p.shape) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            d = g.double() + WEIGHT_DECAY * w[i]
            v[i] = d if step == 0 else MOMENTUM * v[i] + d
            moved = p.detach().double() - w[i]
            torch.testing.assert_close(moved, -lr * v[i], rtol=1e-5, atol=2e-6, msg=lambda m: f"step {step + 1}: {m}")
            w[i] = p.detach().double().clone()  # the next step starts where float32 left it


def test_sgd_momentum_0_9_and_weight_decay_1e4_on_every_parameter_including_gamma_and_beta():
    for norm in ("gn", "bn"):
        parts, _ = trainer_parts(f"norm={norm}", "batch=2", "workers=1")
        assert any(p.dim() == 1 for p in parts.core.parameters())  # gamma/beta are among them
        check_sgd(parts.core, parts.optimizer)

    # The wrong variants on a conv + GN (the same kinds of parameters, a thousandth of the size).
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.GroupNorm(2, 8))
    params = list(model.parameters())
    check_sgd(model, torch.optim.SGD(params, lr=0.1, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY))  # the check passes here
    rejects(check_sgd, model, torch.optim.SGD(params, lr=0.1, momentum=0.8, weight_decay=WEIGHT_DECAY))
    rejects(check_sgd, model, torch.optim.SGD(params, lr=0.1, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                              nesterov=True))
    rejects(check_sgd, model, torch.optim.SGD(params, lr=0.1, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                              dampening=0.1))
    rejects(check_sgd, model, torch.optim.SGD(params, lr=0.1, momentum=MOMENTUM, weight_decay=5e-5))
    # the common "no decay on norm parameters and biases" variant
    vectors = [p for p in params if p.dim() == 1]
    matrices = [p for p in params if p.dim() > 1]
    rejects(check_sgd, model, torch.optim.SGD([{"params": matrices}, {"params": vectors, "weight_decay": 0.0}],
                                              lr=0.1, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY))


# --- He (MSRA) fan-out initialization of every conv ------------------------------------------------------

def check_he_fan_out(model: nn.Module) -> None:
    """Every conv's weights are N(0, 2 / fan_out), fan_out = out_channels * kH * kW. Bounds are 6
    standard errors of each statistic for the layer's sample size (a fixed seed; a correct
    initialization fails one with probability ~1e-9), tight enough that fan-in (std off by
    sqrt(fan_out / fan_in)) or a uniform of the same std fails."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for m in convs:
        out_ch, in_ch, kh, kw = m.weight.shape
        sigma = math.sqrt(2.0 / (out_ch * kh * kw))
        z = (m.weight.detach().double() / sigma).flatten()
        n = z.numel()
        assert abs(z.mean().item()) < 6 / math.sqrt(n), m
        assert abs(z.std().item() - 1) < 6 / math.sqrt(2 * n), (m, z.std().item())
        # a normal's tails: P(|z| > 2) = 4.55%; a uniform with the same std has none beyond 1.73
        tail, p = (z.abs() > 2).double().mean().item(), 0.0455
        assert abs(tail - p) < 6 * math.sqrt(p * (1 - p) / n) + 1e-3, (m, tail)


def test_he_fan_out_init_on_convs_whose_fan_in_and_fan_out_differ():
    torch.manual_seed(0)
    model = build_model(compose_train("norm=gn"), num_classes=1000, in_channels=3)  # ResNet-50, as configured
    fans = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(i != o for i, o in fans) >= 20, fans  # the check can tell fan-in from fan-out
    check_he_fan_out(model)
    vgg = build_model(compose_train("model=vgg16", "norm=gn", "model.classifier_width=16", "model.pool_size=1"),
                      num_classes=10, in_channels=3)
    check_he_fan_out(vgg)

    for wrong in (partial(nn.init.kaiming_normal_, mode="fan_in", nonlinearity="relu"),
                  partial(nn.init.kaiming_uniform_, mode="fan_out", nonlinearity="relu"),  # same std, not normal
                  partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="linear"),  # gain 1, not sqrt(2)
                  nn.init.xavier_normal_):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                wrong(m.weight)
        rejects(check_he_fan_out, model)


# --- zero gamma in the last norm of every residual block -------------------------------------------------

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def check_zero_gamma(model: nn.Module) -> None:
    """Every norm layer starts at gamma 1, beta 0, except the last norm of each residual block's
    branch (the one whose output is added to the shortcut), whose gamma starts at 0, so every block
    starts as the identity (Goyal et al. 2017, followed by the paper). "Last" is found by running the
    block, not by a layer's name."""
    model.eval()
    last_norms = []
    for block in [m for m in model.modules() if isinstance(m, Bottleneck)]:
        branch_norms = []
        shortcut = set(block.downsample.modules()) if block.downsample is not None else set()
        hooks = [m.register_forward_hook(lambda mod, i, o: branch_norms.append(mod))
                 for m in block.modules() if isinstance(m, NORM_TYPES) and m not in shortcut]
        x = torch.rand(2, block.conv1.in_channels, 4, 4)  # post-ReLU input: non-negative
        with torch.no_grad():
            out = block(x)
        for h in hooks:
            h.remove()
        assert branch_norms, block
        last_norms.append(branch_norms[-1])
        if block.downsample is None:  # the whole block is the identity
            torch.testing.assert_close(out, x, rtol=0, atol=0)
        else:
            with torch.no_grad():
                torch.testing.assert_close(out, torch.relu(block.downsample(x)), rtol=0, atol=0)
    assert last_norms
    for m in model.modules():
        if isinstance(m, NORM_TYPES) and m.weight is not None:
            gamma = 0.0 if any(m is last for last in last_norms) else 1.0
            assert torch.all(m.weight == gamma), (m, gamma)
            assert torch.all(m.bias == 0), m


@pytest.mark.parametrize("norm,model", [("gn", "resnet50"), ("bn", "resnet14"), ("brn", "resnet14"),
                                        ("ln", "resnet14"), ("in", "resnet14"), ("gn_ws", "resnet14")])
def test_zero_gamma_in_the_last_norm_of_each_residual_block(norm, model):
    torch.manual_seed(0)
    cfg = compose_train(f"model={model}", f"norm={norm}", "workers=2")
    built = build_model(cfg, num_classes=10, in_channels=3)
    check_zero_gamma(built)
    if norm != "gn":
        return
    blocks = [m for m in built.modules() if isinstance(m, Bottleneck)]
    for wrong in ("none", "bn2", "shortcut"):
        model_ = build_model(cfg, num_classes=10, in_channels=3)
        for b, b_ in zip(blocks, [m for m in model_.modules() if isinstance(m, Bottleneck)]):
            with torch.no_grad():
                if wrong == "none":  # no zero init: gamma 1 everywhere
                    b_.bn3.weight.fill_(1)
                elif wrong == "bn2":  # the middle norm zeroed instead (the block is still the identity)
                    b_.bn3.weight.fill_(1)
                    b_.bn2.weight.zero_()
                elif b_.downsample is not None:  # the projection shortcut's norm zeroed too
                    b_.downsample[1].weight.zero_()
        rejects(check_zero_gamma, model_)


# --- BN statistics per worker, and their running averages ----------------------------------------------

def check_per_worker_bn(layer: nn.Module, workers: int, batch: int) -> None:
    """Two training steps of ``layer`` on the trainer's sampler layout: each worker's images are
    normalized with that worker's own batch mean and biased variance (float64 reference over the
    images a one-worker sampler gives that worker), and the running mean/var become the average
    over workers of what each worker's own BN (momentum 0.1, unbiased variance, as torch's) would
    hold; evaluation then normalizes with them."""
    c = layer.num_features
    num = 8 * batch * workers
    gen = torch.Generator().manual_seed(1)
    bank = torch.randn(num, c, 2, 3, generator=gen) * torch.linspace(0.5, 4, num).view(-1, 1, 1, 1) + 0.3
    gamma, beta = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
        layer.running_mean.zero_()
        layer.running_var.fill_(1)
    step_batches = list(StepBatchSampler(num, batch, workers, seed=3))
    alone = [list(StepBatchSampler(num, batch, workers, seed=3, hosted=range(k, k + 1))) for k in range(workers)]
    run_mean, run_var = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    layer.train()
    for step in range(2):
        indices = step_batches[step]
        with torch.no_grad():
            out = layer(bank[indices]).double()
        row = {i: out[p] for p, i in enumerate(indices)}
        means, variances = [], []
        for k in range(workers):
            mine = alone[k][step]
            x = bank[mine].double()
            mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            ref = (x - mu.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS)
            ref = ref * gamma.double().view(1, -1, 1, 1) + beta.double().view(1, -1, 1, 1)
            torch.testing.assert_close(torch.stack([row[i] for i in mine]), ref, rtol=0, atol=2e-5)
            n = x.numel() // c
            means.append((1 - BN_MOMENTUM) * run_mean + BN_MOMENTUM * mu)
            variances.append((1 - BN_MOMENTUM) * run_var + BN_MOMENTUM * var * n / (n - 1))
        run_mean, run_var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
        torch.testing.assert_close(layer.running_mean.double(), run_mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), run_var, rtol=1e-5, atol=1e-5)
    layer.eval()
    x = bank[:5].double()
    ref = (x - run_mean.view(1, -1, 1, 1)) / torch.sqrt(run_var.view(1, -1, 1, 1) + EPS)
    ref = ref * gamma.double().view(1, -1, 1, 1) + beta.double().view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(layer(bank[:5]).double(), ref, rtol=0, atol=2e-5)


class WholeStepBN(nn.BatchNorm2d):
    """Wrong: one set of statistics over the whole step (what sharing them across workers does)."""


class BlockLayoutBN(nn.BatchNorm2d):
    """Wrong: per-worker statistics, but over contiguous blocks of the batch instead of the
    sampler's interleaved layout."""

    def __init__(self, c, workers):
        super().__init__(c)
        self.workers = workers

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        chunks = x.chunk(self.workers)
        outs = [F.batch_norm(ch, None, None, self.weight, self.bias, True, 0.0, self.eps) for ch in chunks]
        F.batch_norm(x, self.running_mean, self.running_var, None, None, True, self.momentum, self.eps)
        return torch.cat(outs)


class PooledRunningStatsBN(PerWorkerBatchNorm2d):
    """Wrong: normalizes per worker, but the running variance is the EMA of the whole step's
    variance (which adds the spread between workers' means)."""

    def forward(self, x):
        if self.training:
            before = self.running_var.clone()
            out = super().forward(x)
            with torch.no_grad():
                self.running_var.copy_((1 - self.momentum) * before + self.momentum * x.var((0, 2, 3), unbiased=True))
            return out
        return super().forward(x)


def test_bn_statistics_are_per_worker_and_running_averages_average_the_workers():
    batch, workers = 3, 4
    cfg = compose_train("norm=bn", f"batch={batch}", f"workers={workers}", "model=resnet14")
    model = build_model(cfg, num_classes=10, in_channels=3)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    for layer in bns:
        check_per_worker_bn(layer, workers, batch)
    brn = [m for m in build_model(compose_train("norm=brn", "workers=4", "model=resnet14"), 10, 3).modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    brn[0].r_max, brn[0].d_max = 1.0, 0.0  # BRN at r_max = 1, d_max = 0 is per-worker BN (Ioffe 2017)
    check_per_worker_bn(brn[0], workers, batch)

    rejects(check_per_worker_bn, WholeStepBN(16), workers, batch)
    rejects(check_per_worker_bn, BlockLayoutBN(16, workers), workers, batch)
    rejects(check_per_worker_bn, PooledRunningStatsBN(16, workers=workers), workers, batch)
    rejects(check_per_worker_bn, PerWorkerBatchNorm2d(16, workers=workers, momentum=0.01), workers, batch)
    rejects(check_per_worker_bn, PerWorkerBatchNorm2d(16, workers=workers, eps=1e-3), workers, batch)


# --- GN (G = 32), LN (G = 1), IN (G = C): eps 1e-5, per-channel gamma/beta -------------------------------

def check_group_norms(model: nn.Module, groups_of) -> None:
    """Every norm of ``model`` against the paper's Eq. 1-7 in float64: mean and biased variance over
    each sample's (C/G, H, W), eps 1e-5, then a per-channel affine. Inputs of small scale (std
    ~0.003) make eps 1e-5 show against a wrong one."""
    norms = [m for m in model.modules() if isinstance(m, NORM_TYPES)]
    assert norms
    gen = torch.Generator().manual_seed(2)
    for m in norms:
        c = m.weight.numel()
        g = groups_of(c)
        x = torch.randn(2, c, 3, 2, generator=gen) * torch.logspace(-3, 0, c).view(1, c, 1, 1)
        gamma, beta = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
        with torch.no_grad():
            m.weight.copy_(gamma)
            m.bias.copy_(beta)
            out = m.train()(x).double()
        xv = x.double().reshape(2, g, -1)
        ref = (xv - xv.mean(-1, keepdim=True)) / torch.sqrt(xv.var(-1, unbiased=False, keepdim=True) + EPS)
        ref = ref.reshape(x.shape) * gamma.double().view(1, c, 1, 1) + beta.double().view(1, c, 1, 1)
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-4)


@pytest.mark.parametrize("norm,groups_of", [("gn", lambda c: 32), ("ln", lambda c: 1), ("in", lambda c: c)])
def test_gn_ln_in_are_the_papers_group_normalizations(norm, groups_of):
    model = build_model(compose_train(f"norm={norm}", "model=resnet14"), num_classes=10, in_channels=3)
    check_group_norms(model, groups_of)
    rejects(check_group_norms, build_model(compose_train("norm=gn", "norm.groups=16", "model=resnet14"), 10, 3),
            lambda c: 32)
    rejects(check_group_norms, nn.Sequential(nn.GroupNorm(32, 64, eps=1e-3)), lambda c: 32)
    rejects(check_group_norms, nn.Sequential(nn.GroupNorm(32, 64, eps=1e-6)), lambda c: 32)
    rejects(check_group_norms, nn.Sequential(nn.GroupNorm(1, 64)), lambda c: c)  # LN where IN is meant


# --- Batch Renorm: r_max 1.5, d_max 0.5 (Sec. 4.1) ---------------------------------------------------------

def check_batch_renorm(layer: nn.Module) -> None:
    """One training step of a BRN layer whose running statistics are far from the batch's, so both
    clips act, against Ioffe (2017) Algorithm 1 in float64 with r_max = 1.5, d_max = 0.5."""
    c = layer.num_features
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, c, 3, 3, generator=gen) * torch.linspace(0.2, 5, c).view(1, c, 1, 1) + torch.linspace(-3, 3, c).view(1, c, 1, 1)
    gamma, beta = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
        layer.running_mean.zero_()
        layer.running_var.fill_(1)
        out = layer.train()(x).double()
    xd = x.double()
    mu, var = xd.mean((0, 2, 3)), xd.var((0, 2, 3), unbiased=False)
    sigma_b, sigma = torch.sqrt(var + EPS), math.sqrt(1 + EPS)
    r = (sigma_b / sigma).clamp(1 / 1.5, 1.5)
    d = ((mu - 0) / sigma).clamp(-0.5, 0.5)
    assert (r == 1.5).any() and (r == 1 / 1.5).any() and (d.abs() == 0.5).any()  # the clips act
    v = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
    ref = v(gamma.double()) * ((xd - v(mu)) / v(sigma_b) * v(r) + v(d)) + v(beta.double())
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


def test_batch_renorm_clips_r_at_1_5_and_d_at_0_5():
    model = build_model(compose_train("norm=brn", "workers=1", "model=resnet14"), num_classes=10, in_channels=3)
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers[:3]:
        check_batch_renorm(layer)
    check_batch_renorm(build_norm("brn", 64))  # the layer's own defaults are the paper's too
    wrong = build_model(compose_train("norm=brn", "workers=1", "model=resnet14", "norm.r_max=2"), 10, 3)
    rejects(check_batch_renorm, next(m for m in wrong.modules() if isinstance(m, nn.BatchNorm2d)))
    wrong = build_model(compose_train("norm=brn", "workers=1", "model=resnet14", "norm.d_max=1"), 10, 3)
    rejects(check_batch_renorm, next(m for m in wrong.modules() if isinstance(m, nn.BatchNorm2d)))
    rejects(check_batch_renorm, PerWorkerBatchNorm2d(64))  # plain BN: no renormalization


# --- evaluation: shorter side to 256, the center 224 x 224 -------------------------------------------------

def _reference_eval(image: Image.Image) -> torch.Tensor:
    """Resize (PIL bilinear) so the shorter side is 256, keeping the aspect ratio (the longer side
    truncated, torchvision's convention); the 224 x 224 center; /255; ImageNet mean/std."""
    w, h = image.size
    scale = 256 / min(w, h)
    size = (256, int(h * scale)) if w <= h else (int(w * scale), 256)
    resized = np.asarray(image.resize(size, Image.BILINEAR), dtype=np.float64) / 255
    top, left = (resized.shape[0] - 224) // 2, (resized.shape[1] - 224) // 2
    crop = resized[top:top + 224, left:left + 224]
    return torch.from_numpy(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


def check_eval_transform(transform) -> None:
    rng = np.random.default_rng(0)
    for h, w in ((300, 512), (480, 320)):  # landscape and portrait, both with even margins
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[:, : w // 3] //= 4  # structure: a crop off the center shows
        image = Image.fromarray(pixels)
        out = transform(image)
        assert tuple(out.shape) == (3, 224, 224)
        torch.testing.assert_close(out.double(), _reference_eval(image), rtol=0, atol=1e-4)


def test_evaluation_is_the_center_224_of_the_image_resized_to_shorter_side_256():
    cfg = data_config("imagenet")
    _, val = imagenet_transforms(cfg)
    check_eval_transform(val)
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    for wrong in ([v2.Resize((256, 256)), v2.CenterCrop(224)],  # squashed: aspect ratio lost
                  [v2.Resize(224), v2.CenterCrop(224)],        # shorter side 224
                  [v2.Resize(288), v2.CenterCrop(224)],        # another resize
                  [v2.Resize(256), v2.RandomCrop(224)]):       # a random crop
        torch.manual_seed(0)
        rejects(check_eval_transform, v2.Compose([*wrong, *tail]))


# --- the reported number: the median val error of the final 5 epochs --------------------------------------

def check_final_error(final_of) -> None:
    """``final_of(val_errors)``: a complete run's reported error. It must be the median of the
    last 5 epochs' errors, for runs longer than 5 epochs where mean, last, best, a window of 4 or 6
    and the median of all epochs all give other numbers."""
    runs = [[90.0, 80.0, 70.0, 31.0, 30.0, 33.5, 29.0, 30.5, 40.0],
            [50.0, 45.0, 44.0, 41.0, 42.5, 39.0, 38.0],
            [60.0, 35.0, 34.0, 36.0, 20.0, 37.0]]
    rng = np.random.default_rng(5)
    runs += [list(np.round(rng.uniform(20, 80, n), 2)) for n in (6, 8, 11, 14)]
    for errors in runs:
        window = sorted(errors[-FINAL_EPOCHS:])
        assert final_of(list(errors)) == pytest.approx(window[FINAL_EPOCHS // 2], abs=1e-12), errors


def test_reported_error_is_the_median_of_the_final_5_epochs():
    cfg = compose_train()
    assert cfg.final_epochs == FINAL_EPOCHS

    def trainer_final(errors):
        history = [{"val_error": e, "train_seconds": 1.0, "epoch_seconds": 1.0, "train_images": 8} for e in errors]
        summary = train.summarize(cfg, history, "complete", "cpu")
        assert summary["val_errors"] == errors and summary["final_epochs"] == FINAL_EPOCHS
        return summary["final_error"]

    check_final_error(trainer_final)
    rejects(check_final_error, lambda e: statistics.mean(e[-5:]))
    rejects(check_final_error, lambda e: e[-1])
    rejects(check_final_error, lambda e: min(e[-5:]))
    rejects(check_final_error, lambda e: statistics.median(e[-4:]))
    rejects(check_final_error, lambda e: statistics.median(e[-6:]))
    rejects(check_final_error, lambda e: statistics.median(e))
    rejects(check_final_error, lambda e: statistics.median(e[-6:-1]))  # the window off by one epoch
