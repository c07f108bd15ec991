"""Released weights through the real entry points: ``python -m gnrepro.evaluate`` on a fake ImageNet
and ``python -m gnrepro.train init=...`` on a fake Pets (tiny images, few of them: seconds each)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from torch import nn

from gnrepro.runs import published_checks
from gnrepro.data import build_datasets
from gnrepro.data.fake import make_imagenet, make_pets
from gnrepro.errors import ConfigError
from gnrepro.evaluate import check_published, with_catalogue_choices
from gnrepro.runs.identity import protocol_hash
from gnrepro.resources import CONFIGS
from gnrepro.runfiles import load_checkpoint
from gnrepro.weights import catalog
from tests.weights.test_weights import calibrate_bn, randomize

TINY_EVAL = ("data.eval_resize=32", "data.eval_crop=32", "data.num_workers=0", "device=cpu")
TINY_TRAIN = ("data.train_crop=32", *TINY_EVAL, "workers=1", "progress=false", "keep_checkpoint=last")


def run_module(module, *args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(CONFIGS.parent)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def bn_file(tmp_path, name="resnet50-file.pth"):
    tv = torchvision.models.resnet50(weights=None)
    randomize(tv)
    calibrate_bn(tv)
    torch.save(tv.state_dict(), tmp_path / name)
    return tv, tmp_path / name


@pytest.mark.slow
def test_evaluate_cli_on_a_fake_imagenet_gives_the_source_models_error(tmp_path):
    root = make_imagenet(tmp_path / "inet", classes=3, train_per_class=1, val_per_class=2, size=(40, 32))
    tv, path = bn_file(tmp_path)
    proc = run_module("gnrepro.evaluate", f"weights={path}", "data=imagenet", f"data.root={root}", *TINY_EVAL,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = published_checks.read(tmp_path / "outputs/runs")
    assert row["images"] == 6 and row["format"] == "torchvision" and row["published_top1_err"] is None
    # the same images through torchvision's own model, with the suite's eval transform
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"weights={path}", f"data.root={root}", *TINY_EVAL])
    val = build_datasets(cfg.data).val
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        logits = tv.eval()(images)
    assert row["top1_err"] == 100.0 * (logits.argmax(1) != labels).sum().item() / len(labels)
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1)
    assert row["top5_err"] == 100.0 * (~top5).sum().item() / len(labels)
    assert "top-1 error" in proc.stdout and (tmp_path / "outputs/runs/published_checks/checks.md").is_file()


def test_evaluate_prints_the_published_number_and_the_difference(tmp_path, monkeypatch, capsys):
    root = make_imagenet(tmp_path / "inet", classes=2, train_per_class=1, val_per_class=1, size=(40, 32))
    _, path = bn_file(tmp_path, "resnet50-0676ba61.pth")
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    entry = catalog.CATALOG["tv-resnet50"]
    monkeypatch.setitem(catalog.CATALOG, "tv-resnet50",
                        catalog.Released(**{**entry.__dict__, "url": path.as_uri(), "sha256_prefix": None}))
    args = with_catalogue_choices(["weights=tv-resnet50", f"data.root={root}", f"results_dir={tmp_path}/r", *TINY_EVAL])
    assert args[:2] == ["model=resnet50", "norm=bn"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=args)
    row = check_published(cfg)
    assert row["published_top1_err"] == 23.870 and row["diff_top1"] == row["top1_err"] - 23.870
    assert "published 23.87%, difference" in capsys.readouterr().out


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_evaluate_refuses_a_malicious_pickle_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # os.system("touch ...") in pickle opcodes
    (tmp_path / "evil.pkl").write_bytes(payload)
    root = make_imagenet(tmp_path / "inet", classes=2, train_per_class=1, val_per_class=1, size=(40, 32))
    proc = run_module("gnrepro.evaluate", f"weights={tmp_path / 'evil.pkl'}", "norm=gn", f"data.root={root}",
                      *TINY_EVAL, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gnrepro: error: refused to load") and len(proc.stderr.strip().splitlines()) == 1
    assert "os.system is not allowed" in proc.stderr and not marker.exists()
    assert not (tmp_path / "outputs").exists(), "a refused check leaves no folder or log behind"


@pytest.mark.slow
def test_init_fine_tunes_from_a_released_file_into_its_own_folder(tmp_path):
    root = make_pets(tmp_path / "pets", train_per_breed=2, test_per_breed=1, size=(40, 32))
    gn = torchvision.models.resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    randomize(gn)
    torch.save(gn.state_dict(), tmp_path / "gn50.pth")
    common = ("data=pets", f"data.root={root}", "batch=2", "epochs=1", *TINY_TRAIN)
    # an LR of 1e-30 (0 is refused): every update is below float32's resolution, so the weights stay the file's
    proc = run_module("gnrepro.train", "norm=gn", f"init={tmp_path / 'gn50.pth'}", "optim.base_lr=1e-30", *common,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / f"outputs/runs/pets_resnet50/gn32_b2x1_e1_s0_from-gn50.pth_{protocol_hash({'base_lr': 1e-30})}"
    assert run_dir.is_dir(), list((tmp_path / "outputs/runs").rglob("*"))
    assert json.loads((run_dir / "summary.json").read_text())["init"] == str(tmp_path / "gn50.pth")
    model = load_checkpoint(run_dir / "last.pt")["model"]
    for key, value in gn.state_dict().items():  # every weight but the new classifier is the file's
        if not key.startswith("fc."):
            assert torch.equal(model[key], value), key
    assert model["fc.weight"].shape == (3, 2048)

    # BN*: frozen statistics and affine stay the file's while the convs train
    tv, path = bn_file(tmp_path, "bn50.pth")
    # a small LR: random weights with statistics calibrated on other images give logits in the
    # thousands, which the default LR turns into a NaN loss (it only has to move the convs)
    proc = run_module("gnrepro.train", "norm=bn", "norm.frozen=true", f"init={path}", "optim.base_lr=1e-5", *common,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = load_checkpoint(tmp_path / f"outputs/runs/pets_resnet50/frozenbn_b2x1_e1_s0_from-bn50.pth_{protocol_hash({'base_lr': 1e-5})}/last.pt")["model"]
    src = tv.state_dict()
    for key in ("bn1.running_mean", "layer4.2.bn3.weight", "layer2.0.downsample.1.running_var"):
        assert torch.equal(model[key], src[key]), key
    assert not torch.equal(model["layer4.2.conv3.weight"], src["layer4.2.conv3.weight"])


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_init_mistakes_are_one_line_and_leave_no_folder(tmp_path):
    root = make_pets(tmp_path / "pets", train_per_breed=1, test_per_breed=1, size=(40, 32))
    gn101 = torchvision.models.resnet101(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    torch.save(gn101.state_dict(), tmp_path / "gn101.pth")
    common = ("data=pets", f"data.root={root}", "batch=2", "epochs=1", *TINY_TRAIN)
    for args, expected in [
        (("norm=gn", f"init={tmp_path / 'gn101.pth'}"), "unexpected keys: layer3.6."),
        (("norm=bn", "norm.frozen=true"), "needs init=<released BN model>"),
        (("norm=bn", "init=R-50-GN"), "set norm=gn"),
    ]:
        proc = run_module("gnrepro.train", *args, *common, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))


EVALUATE_MISTAKES = {  # override -> the one line it must give, before any download or data
    "eval_batch=0": "eval_batch must be a positive integer, got 0",
    "device=tpu": "device must be auto, cpu, cuda or cuda:N, got 'tpu'",
    "+foo=1": "unknown key foo; python -m gnrepro.evaluate takes:",
    "weights_format=onnx": "weights_format must be one of auto, caffe2, torchvision, ws_official, gnrepro",
    "workers=-2": "workers must be a positive integer, got -2",
    "norm.groups=48": "GN with groups=48 cannot split a layer of 64 channels",
}


@pytest.mark.parametrize("override", list(EVALUATE_MISTAKES))
def test_evaluate_mistakes_are_refused_before_any_download(override, monkeypatch):
    monkeypatch.setattr("gnrepro.evaluate.resolve", lambda *a, **k: pytest.fail("reached the download"))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["weights=R-50-GN", "model=resnet50", "norm=gn",
                                                        "data.root=/unused", override])
    with pytest.raises(ConfigError) as err:
        check_published(cfg)
    assert EVALUATE_MISTAKES[override] in str(err.value) and "\n" not in str(err.value)


def test_init_needs_rgb_data_and_is_checked_before_any_folder(compose_cfg):
    from gnrepro.settings.validate import validate

    with pytest.raises(ConfigError, match="init=tv-resnet50 is an ImageNet model for RGB images; data=digits"):
        validate(compose_cfg("init=tv-resnet50"))
    with pytest.raises(ConfigError, match="needs init=<released BN model>"):
        validate(compose_cfg("norm=frozen_bn"))


def test_evaluate_names_its_own_keys_for_a_key_it_does_not_have():
    from gnrepro.settings.preflight import check_composes

    with pytest.raises(ConfigError, match=r"^unknown key foo; python -m gnrepro.evaluate takes: weights, "):
        check_composes(["weights=R-50-GN", "foo=1"], "evaluate")
    check_composes(["weights=R-50-GN", "--help"], "evaluate")  # Hydra's own flags: nothing to check
