"""python -m gnrepro.plan --throughput measure: every distinct setting of a sweep timed once on this
machine with the trainer's own step, each run costed at its setting's rate (digits proxy: tiny, CPU)."""
import math

import pytest
from hydra.core.global_hydra import GlobalHydra

import gnrepro.engine.throughput as speed
from gnrepro.engine import loop as engine
from gnrepro import plan

SWEEP = ["experiment=table1_norms_proxy", "norm=bn,gn", "seed=0,1", "batch=2"]


@pytest.fixture
def quick(monkeypatch):
    """One timed step after no warm-up, and a record of every setting measured."""
    calls = []
    real = speed.measure

    def measure(cfg, device, steps=1, warmup=0, seed=0):
        calls.append((cfg.norm.name, cfg.batch, cfg.seed, str(device)))
        return real(cfg, device, steps=1, warmup=0)

    monkeypatch.setattr(speed, "measure", measure)
    return calls


def test_each_distinct_setting_is_timed_once_and_costs_its_runs(tmp_path, quick):
    GlobalHydra.instance().clear()
    measured = {}
    runs = plan.plan(SWEEP, plan.MEASURE, root=tmp_path, measured=measured)
    assert len(runs) == 4 and not any(tmp_path.iterdir())
    assert [c[:2] for c in quick] == [("bn", 2), ("gn", 2)], "seeds share a setting: timed once each"
    assert len(measured) == 2 and all(math.isfinite(r) and r > 0 for r in measured.values())
    for r in runs:
        assert r.setting in measured and r.rate == measured[r.setting]
        assert "batch=2 workers=1 input=1x10x10 classes=10 on cpu" in r.setting
        assert r.gpu_hours == pytest.approx(r.images / r.rate / 3600)
    assert {r.norm_tag for r in runs} == {"bn", "gn32"}
    text = plan.format_plan(runs, plan.MEASURE)
    assert "img/s" in text and "at each setting's measured images/s on this machine" in text


def test_a_setting_is_what_the_step_speed_depends_on(compose_cfg):
    a = speed.setting_of(compose_cfg("experiment=table1_norms_proxy", "norm=gn", "seed=0"))
    b = speed.setting_of(compose_cfg("experiment=table1_norms_proxy", "norm=gn", "seed=1", "epochs=3"))
    c = speed.setting_of(compose_cfg("experiment=table1_norms_proxy", "norm=gn", "batch=4"))
    d = speed.setting_of(compose_cfg("experiment=table1_norms_proxy", "norm=gn", "norm.groups=16"))
    assert a == b and a.key != c.key and a.key != d.key
    assert c.shape == (4, 1, 10, 10) and c.classes == 10
    big = speed.setting_of(compose_cfg("data=imagenet", "data.root=/x", "batch=32", "workers=8"))
    assert big.shape == (256, 3, 224, 224) and big.classes == 1000  # one process's step: batch x workers


def test_measure_runs_the_trainers_step(compose_cfg, monkeypatch):
    seen = []
    real = engine.train_one_epoch

    def spy(model, loader, *args, **kwargs):
        seen.append((len(loader), tuple(loader[0][0].shape), model.training))
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(speed, "train_one_epoch", spy)
    cfg = compose_cfg("experiment=table1_norms_proxy", "norm=gn", "batch=2", "workers=2")
    rate = speed.measure(cfg, speed.torch.device("cpu"), steps=2, warmup=1)
    assert seen == [(1, (4, 1, 10, 10), True), (2, (4, 1, 10, 10), True)]
    assert math.isfinite(rate) and rate > 0


def test_cli_prints_the_measured_table(tmp_path, monkeypatch, capsys, quick):
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    assert plan.main(["experiment=table1_norms_proxy", "norm=gn", "batch=2", "--throughput", "measure"]) == 0
    out = capsys.readouterr().out
    assert "measured here" in out and "resnet26 gn32 batch=2 workers=1" in out and "1 runs" in out


def test_a_bad_throughput_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert plan.main(["--throughput", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gnrepro: error: --throughput must be a finite number of images/s above 0 or 'measure', got 'fast'; "
                   "e.g. --throughput 400 or --throughput measure"]
