"""The Figure 6 probe (gnrepro.engine.probe): percentiles against numpy's, which steps it records, what it
writes, and that it leaves training alone."""
import numpy as np
import pytest
import torch
from torch import nn

from gnrepro.settings.validate import validate
from gnrepro.errors import ConfigError
from gnrepro.engine.probe import FILE, PercentileProbe, resolve_layer, sample_percentiles
from gnrepro.runfiles import read_jsonl
from gnrepro.models.vgg import VGG


def test_percentiles_of_all_values_equal_numpys():
    x = torch.randn(3, 5, 4, 4) ** 3
    got = sample_percentiles(x, None)
    np.testing.assert_allclose(got, np.percentile(x.numpy().astype(np.float64), [1, 20, 80, 99]), rtol=1e-12)
    assert sample_percentiles(x, 10_000) == got  # more samples than values: all of them


def test_sampled_percentiles_are_numpys_on_the_sampled_positions():
    x = torch.randn(4, 8, 5, 5)
    got = sample_percentiles(x, 100, (1, 50, 99), torch.Generator().manual_seed(3))
    idx = torch.randint(x.numel(), (100,), generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(got, np.percentile(x.reshape(-1)[idx].double().numpy(), [1, 50, 99]), rtol=1e-12)


def _tiny_vgg():
    torch.manual_seed(0)
    return VGG(lambda c: nn.GroupNorm(32, c), lambda *a, **k: nn.Conv2d(*a, **k), num_classes=3, in_channels=1,
               small_input=True, classifier_width=8, pool_size=1)


def test_probe_records_the_named_layer_every_n_training_steps(tmp_path):
    model = _tiny_vgg()
    outputs = []
    model.get_submodule("features.40").register_forward_hook(lambda m, a, out: outputs.append(out.detach().clone()))
    probe = PercentileProbe(model, "conv5_3", every_steps=2, samples=None, run_dir=tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(5):
        model.train()
        model(torch.randn(2, 1, 10, 10)).sum().backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, 1, 10, 10))  # evaluation: never recorded
    probe.flush()
    rows = read_jsonl(tmp_path / FILE, index="step")
    assert [r["step"] for r in rows] == [1, 3, 5]
    train_outputs = outputs[0::2]  # every other forward was an evaluation
    for row, step in zip(rows, (1, 3, 5)):
        expected = np.percentile(train_outputs[step - 1].double().numpy(), [1, 20, 80, 99])
        np.testing.assert_allclose([row[k] for k in ("p1", "p20", "p80", "p99")], expected, rtol=1e-12)
        assert row["layer"] == "conv5_3" and row["module"] == "features.40"


def test_a_resumed_probe_drops_records_past_the_checkpoint_and_counts_on(tmp_path):
    model = _tiny_vgg()
    (tmp_path / FILE).write_text("".join(f'{{"step": {s}, "p1": 0}}\n' for s in (1, 3, 5, 7)))
    probe = PercentileProbe(model, "conv5_3", every_steps=2, samples=64, run_dir=tmp_path, start_step=4)
    model.train()
    model(torch.randn(2, 1, 10, 10))  # step 5
    probe.flush()
    assert [r["step"] for r in read_jsonl(tmp_path / FILE, index="step")] == [1, 3, 5]


def test_probing_draws_nothing_from_the_global_random_stream(tmp_path):
    model, x = _tiny_vgg(), torch.randn(2, 1, 10, 10)
    model.train()
    probe = PercentileProbe(model, "conv5_3", every_steps=1, samples=16, run_dir=tmp_path)
    torch.manual_seed(5)
    probed = model(x)
    after_probed = torch.get_rng_state()
    probe.close()
    torch.manual_seed(5)
    plain = model(x)  # dropout draws the same masks only if the probe drew nothing
    assert probe.rows and torch.equal(after_probed, torch.get_rng_state()) and torch.equal(probed, plain)


def test_bad_layer_and_settings_are_config_errors(compose_cfg):
    with pytest.raises(ConfigError, match="probe.layer='conv6_1' is not a layer"):
        resolve_layer(_tiny_vgg(), "conv6_1")
    assert resolve_layer(_tiny_vgg(), "features.3")[0] == "features.3"
    with pytest.raises(ConfigError, match="probe.every_steps must be an integer >= 0"):
        validate(compose_cfg("probe.every_steps=-1"))
    with pytest.raises(ConfigError, match="probe.layer is empty"):
        validate(compose_cfg("probe.every_steps=5", "probe.layer=null"))
    with pytest.raises(ConfigError, match=r"probe.percentiles must lie in \[0, 100\]"):
        validate(compose_cfg("probe.percentiles=[1,101]"))


def test_a_resumed_probe_samples_what_a_straight_one_samples(tmp_path):
    """A probe attached at start_step=2 (a resumed run) records step 3 exactly as a probe that saw
    steps 1-3. Rejects one generator seeded once per launch: resumed, it would restart its stream
    and sample step 3 at step 1's positions."""
    model = _tiny_vgg()
    model.train()
    inputs = [torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    straight = PercentileProbe(model, "conv5_3", every_steps=1, samples=16, run_dir=tmp_path, seed=7)
    for x in inputs:
        torch.manual_seed(0)  # the same dropout masks in both
        model(x)
    straight.close()
    resumed = PercentileProbe(model, "conv5_3", every_steps=1, samples=16, run_dir=tmp_path, seed=7, start_step=2)
    torch.manual_seed(0)
    model(inputs[2])
    resumed.close()
    assert [r["step"] for r in straight.rows] == [1, 2, 3] and [r["step"] for r in resumed.rows] == [3]
    assert resumed.rows[0] == straight.rows[2]
