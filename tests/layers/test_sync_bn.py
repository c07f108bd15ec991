"""Issue 27, item 4: SyncBN (``norm.sync=true``).

What can run on a CPU: torch's SyncBatchNorm synchronizes only CUDA (or XPU/HPU/PrivateUse1) inputs,
and its kernels (``aten::batch_norm_stats`` and the gather/reduce ops it uses) have no CPU
implementation in torch, so SyncBN *across processes* cannot run here at all. gnrepro refuses it
on the CPU in one line before anything is written (tested below, through a real 2-process torchrun).
Within one process, SyncBN must compute one set of statistics over every worker the process hosts,
i.e. exactly full-batch BN over the step's batch: that is tested against an independent reference
(the same network with every norm replaced by a fresh ``nn.BatchNorm2d``), in float64, for the
forward, every gradient and the running statistics, with a negative control (per-worker BN, the
paper's default, is not full-batch BN on the same batch).

Not tested (needs 2 CUDA GPUs, which this suite's machines do not have): SyncBN under a 2-process
torchrun equal to full-batch BN in one process.
"""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from gnrepro.models.build import build_model
from tests.test_real_runs import env

SIZE = ("model=resnet14", "norm=bn", "batch=4", "workers=2", "data.image_size=10")


def full_batch_reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BN-like layer a plain ``nn.BatchNorm2d`` holding its affine
    parameters and running statistics (torch's own layer: statistics over the whole batch)."""
    ref = copy.deepcopy(model)
    for name, module in list(ref.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) or type(child).__name__ == "PerWorkerBatchNorm2d":
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=0.1).to(torch.float64)
                bn.load_state_dict(child.state_dict())  # strict: every parameter and statistic copied
                setattr(module, child_name, bn)
    return ref


def forward_backward(model: nn.Module, images: torch.Tensor):
    model.train()
    model.zero_grad()
    out = model(images)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads, {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def compare(compose_cfg, *overrides):
    torch.manual_seed(0)
    model = build_model(compose_cfg(*SIZE, *overrides), num_classes=10, in_channels=1).to(torch.float64)
    # BN layers whose weight and bias are not the defaults, so a layer skipped or mis-copied shows
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ref = full_batch_reference(model)
    images = torch.randn(8, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return forward_backward(model, images), forward_backward(ref, images), model


def test_sync_bn_in_one_process_is_full_batch_bn_over_all_hosted_workers(compose_cfg):
    (out, grads, stats), (ref_out, ref_grads, ref_stats), model = compare(compose_cfg, "norm.sync=true")
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) >= 13  # every norm of the ResNet-14
    # float64: the two compute the same sums in (nearly) the same order; 1e-10 is rounding
    assert torch.allclose(out, ref_out, rtol=0, atol=1e-10), (out - ref_out).abs().max()
    for k in grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-8, atol=1e-10), k
    assert stats.keys() == ref_stats.keys() and stats
    for k in stats:  # running averages of the full batch's mean and (unbiased) variance, momentum 0.1
        assert torch.allclose(stats[k], ref_stats[k], rtol=0, atol=1e-12), k


def test_negative_control_per_worker_bn_is_not_full_batch_bn(compose_cfg):
    """The same comparison fails for the paper's default (statistics per worker of 4 images): so
    the test above can tell SyncBN from per-worker BN (a norm.sync that was ignored would fail it)."""
    (out, grads, stats), (ref_out, _, ref_stats), _ = compare(compose_cfg)
    assert (out - ref_out).abs().max() > 1e-3
    assert any((stats[k] - ref_stats[k]).abs().max() > 1e-6 for k in stats)


@pytest.mark.slow  # a 2-process torchrun: seconds
def test_sync_bn_across_processes_on_the_cpu_is_refused_in_one_line(tmp_path):
    """torch cannot synchronize BN on the CPU (see the module docstring); gnrepro says so in one line
    per process (and its launcher, gnrepro.torchrun, one line naming the process), exit 2, no run
    folder left behind, rather than crashing inside SyncBatchNorm's forward mid-step. Rejects: the
    refusal dropped (the run would reach SyncBatchNorm's ValueError, a traceback) or made after the
    run folder was created."""
    proc = subprocess.run([sys.executable, "-m", "gnrepro.torchrun", "--standalone", "--nproc_per_node=2",
                           "-m", "gnrepro.train", *SIZE, "norm.sync=true", "epochs=1", "data.subset=16",
                           "data.val_fraction=0.05", "progress=false", "device=cpu"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gnrepro:")]
    refusal = "gnrepro: error: norm.sync=true across processes needs CUDA devices (SyncBatchNorm); drop it on CPU"
    assert lines[:2] == [refusal, refusal], proc.stderr[-3000:]
    assert len(lines) == 3 and "exited with code 2; its own message is above" in lines[2], lines
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "outputs").exists(), sorted((tmp_path / "outputs").rglob("*"))
