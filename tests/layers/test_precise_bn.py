"""Precise BN (gnrepro.layers.precise_bn): exact population statistics of every BN layer's inputs over the
chosen batches (float64 reference), the EMA restored afterwards, and training left unchanged."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gnrepro.layers.batch_renorm import PerWorkerBatchRenorm2d
from gnrepro.settings.validate import validate
from gnrepro.errors import ConfigError
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d
from gnrepro.layers.precise_bn import evaluation_statistics, population_statistics


def _model(workers=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), PerWorkerBatchNorm2d(4, workers=workers), nn.ReLU(),
                         nn.Conv2d(4, 3, 3, padding=1), PerWorkerBatchRenorm2d(3, workers=workers), nn.ReLU(),
                         nn.Dropout(0.5))


def _batches(k=3, n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 2, 5, 5, generator=g) * 2 + 1, torch.zeros(n)) for _ in range(k)]


def _reference(model, batches):
    """Float64 mean / biased var of each BN layer's inputs, captured on the same training-mode passes."""
    inputs = {m: [] for m in model if isinstance(m, nn.BatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda mod, a: inputs[mod].append(a[0].detach().double())) for m in inputs]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        for m in inputs:
            m.momentum = 0.0
        for x, _ in batches:
            model(x)
        for m in inputs:
            m.momentum = 0.1
    for h in hooks:
        h.remove()
    model.load_state_dict(saved)
    out = {}
    for m, xs in inputs.items():
        allx = torch.cat(xs).transpose(0, 1).reshape(m.num_features, -1)
        out[m] = (allx.mean(1), allx.var(1, unbiased=False))
    return out


def test_population_statistics_are_the_exact_mean_and_var_of_the_layer_inputs():
    model, batches = _model(), _batches()
    with torch.no_grad():  # EMA away from the population, so copying it could not pass
        for m in model:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.3), m.running_var.fill_(2.0)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    stats = population_statistics(model, batches, "cpu")
    assert not model.training and all(m.momentum == 0.1 for m in stats), "mode and momentum restored"
    assert torch.equal(rng, torch.get_rng_state()), "dropout draws forked, not taken from training's stream"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "buffers and weights untouched"
    ref = _reference(model, batches)
    assert set(stats) == set(ref) and len(stats) == 2
    for m, (mean, var) in stats.items():
        torch.testing.assert_close(mean, ref[m][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var, ref[m][1], rtol=1e-10, atol=1e-12)


def test_evaluation_statistics_swaps_in_population_statistics_then_restores_the_ema():
    model, batches = _model(), _batches()
    bn = model[1]
    ema = bn.running_mean.clone(), bn.running_var.clone()
    ref = _reference(model, batches)[bn]
    precise = OmegaConf.create({"name": "bn", "eval_stats": "precise", "precise_batches": 3})
    with evaluation_statistics(model, precise, lambda: iter(batches), "cpu"):
        torch.testing.assert_close(bn.running_mean.double(), ref[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(bn.running_var.double(), ref[1], rtol=1e-6, atol=1e-7)
    assert torch.equal(bn.running_mean, ema[0]) and torch.equal(bn.running_var, ema[1])
    running = OmegaConf.create({"name": "bn", "eval_stats": "running"})
    with evaluation_statistics(model, running, lambda: pytest.fail("running mode reads no batches"), "cpu"):
        assert torch.equal(bn.running_mean, ema[0])


def test_config_checks(compose_cfg):
    with pytest.raises(ConfigError, match="norm.eval_stats must be one of running, precise, got 'exact'"):
        validate(compose_cfg("norm.eval_stats=exact"))
    with pytest.raises(ConfigError, match="norm.precise_batches must be a positive integer"):
        validate(compose_cfg("norm.eval_stats=precise", "norm.precise_batches=0"))
    with pytest.raises(ConfigError, match="norm 'gn' has no eval_stats"):
        validate(compose_cfg("norm=gn", "+norm.eval_stats=precise"))


@pytest.mark.slow
def test_precise_run_trains_identically_and_evaluates_with_population_statistics(compose_cfg, tmp_path):
    from gnrepro.train import run

    common = ["norm=bn", "batch=4", "workers=2", "epochs=2", "data.subset=32", "data.image_size=8", "progress=false",
              "deterministic=true", "optim.warmup=never"]
    summaries = {}
    for mode in ("running", "precise"):
        cfg = compose_cfg(*common, f"norm.eval_stats={mode}", "norm.precise_batches=3")
        summaries[mode] = run(cfg, tmp_path / mode)
        summaries[mode]["metrics"] = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").open()]
    a, b = summaries["running"], summaries["precise"]
    assert b["norm_tag"] == "bn-precise" and a["norm_tag"] == "bn"
    assert [r["train_loss"] for r in a["metrics"]] == [r["train_loss"] for r in b["metrics"]], "training unchanged"
    assert [r["val_loss"] for r in a["metrics"]] != [r["val_loss"] for r in b["metrics"]]
