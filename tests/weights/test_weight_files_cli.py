"""Issue 27, item 4: weights in the project's own format (a run's ``weights.pt``), a timm training
checkpoint and a safetensors file, each through ``python -m gnrepro.evaluate`` and
``python -m gnrepro.train init=...``, built for real:

* gnrepro: a 1-epoch ``model=resnet50 norm=gn`` run on a fake ImageNet, its ``weights.pt``;
* timm: ``timm.create_model("resnet50_gn", num_classes=3)`` (timm's own GN ResNet-50: GroupNorm(32)),
  random but seeded weights, saved by timm's ``CheckpointSaver`` with an ``argparse.Namespace`` of
  settings, as timm's train.py saves every checkpoint;
* safetensors: the same timm model's state dict through ``safetensors.torch.save_file``.

Each check compares with an independent reference: the weights gnrepro loads equal the file's
tensors read back by torch/safetensors themselves (not through gnrepro), evaluate's top-1 error
equals the source network's own forward (timm's model, or a torchvision GN ResNet-50 holding the
run's weights) on the same images, and a fine-tuning run at an LR of 1e-30 (every update below float32's
resolution) ends holding the file's weights in every layer but the new classifier. Rejects: a
loader that drops or renames a block (missing keys, or a key loaded into the wrong layer, changes
both the weights and the error), the wrong input convention folded into conv1 (the error and conv1
change), a timm checkpoint's optimizer (momentum) tensors taken for the weights, and the timm checkpoint
refused outright (it was, before: weights_only refused its ``args`` Namespace).
"""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from torch import nn

from gnrepro.data import build_datasets
from gnrepro.data.fake import make_imagenet, make_pets
from gnrepro.models.build import build_model
from gnrepro.resources import CONFIGS
from gnrepro.runfiles import load_checkpoint
from gnrepro.runs import published_checks
from gnrepro.weights.load import load_released, resolve
from tests.weights.test_weights import randomize
from tests.weights.test_weights_cli import TINY_EVAL, TINY_TRAIN, run_module

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The three files, the fake ImageNet they are evaluated on and the fake Pets they fine-tune on."""
    tmp = tmp_path_factory.mktemp("weight_files")
    inet = make_imagenet(tmp / "inet", classes=3, train_per_class=2, val_per_class=4, size=(40, 32))
    pets = make_pets(tmp / "pets", train_per_breed=2, test_per_breed=1, size=(40, 32))

    proc = run_module("gnrepro.train", "model=resnet50", "norm=gn", "data=imagenet", f"data.root={inet}", "batch=2",
                      "epochs=1", *TINY_TRAIN[:-1], cwd=tmp)  # without keep_checkpoint=last: the default weights.pt
    assert proc.returncode == 0, proc.stderr[-3000:]
    (own,) = (tmp / "outputs/runs").glob("*/*/weights.pt")

    torch.manual_seed(0)
    model = timm.create_model("resnet50_gn", pretrained=False, num_classes=3)
    randomize(model, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # the checkpoint's optimizer state: momentum tensors that must not be taken for weights
    from timm.utils import CheckpointSaver

    saver = CheckpointSaver(model, optimizer, args=argparse.Namespace(model="resnet50_gn", lr=0.1),
                            checkpoint_dir=str(tmp / "timm"), recovery_dir=str(tmp / "timm"), max_history=1)
    (tmp / "timm").mkdir()
    saver.save_checkpoint(0, metric=1.0)
    timm_file = tmp / "timm/checkpoint-0.pth.tar"
    st_file = tmp / "resnet50_gn.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(st_file))
    return {"inet": inet, "pets": pets, "own": own, "timm": timm_file, "safetensors": st_file,
            "timm_model": model.eval()}


def file_tensors(kind, path) -> dict:
    """The file's weights read by the file's own library, not by gnrepro."""
    if kind == "safetensors":
        return safetensors_torch.load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return obj["state_dict"] if kind == "timm" else obj["model"]


def eval_cfg(path, root):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[f"weights={path}", "model=resnet50", "norm=gn",
                                                          f"data.root={root}", *TINY_EVAL])


def reference_model(kind, files, state):
    """The network the file came from, as its own library builds it."""
    if kind == "own":
        tv = torchvision.models.resnet50(weights=None, num_classes=3, norm_layer=lambda c: nn.GroupNorm(32, c))
        tv.load_state_dict(state)
        return tv.eval()
    return files["timm_model"]


@pytest.mark.slow  # a ResNet-50 run and evaluation in real processes: seconds each
@pytest.mark.parametrize("kind", ["own", "timm", "safetensors"])
def test_evaluate_loads_the_files_weights_and_gives_the_source_models_error(kind, files, tmp_path):
    path = files[kind]
    expected_tensors = file_tensors(kind, path)
    # the weights evaluate loads: resolve + build + load_released, as check_published calls them
    cfg = eval_cfg(path, files["inet"])
    source = resolve(str(path), "auto", "plain")
    assert source.format == {"own": "gnrepro", "timm": "torchvision", "safetensors": "torchvision"}[kind]
    model = build_model(cfg, 3, 3, workers=1)
    load_released(model, source, cfg, skip_classifier=False)
    loaded = model.state_dict()
    assert set(loaded) == set(expected_tensors)
    different = [k for k in loaded if not torch.equal(loaded[k], expected_tensors[k])]
    assert not different, different[:5]

    proc = run_module("gnrepro.evaluate", f"weights={path}", "model=resnet50", "norm=gn", "data=imagenet",
                      f"data.root={files['inet']}", *TINY_EVAL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = published_checks.read(tmp_path / "outputs/runs")
    assert row["images"] == 12 and row["format"] == source.format
    val = build_datasets(cfg.data).val
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        logits = reference_model(kind, files, expected_tensors)(images)
    assert row["top1_err"] == pytest.approx(100.0 * (logits.argmax(1) != labels).sum().item() / len(labels), abs=1e-9)
    # random weights may predict one class for every image, so the error alone could not tell weights
    # apart; the mean cross-entropy does (float32 rounding of logits in the hundreds: 1e-4 relative)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert row["val_loss"] == pytest.approx(loss, rel=1e-4), (row["val_loss"], loss)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["own", "timm", "safetensors"])
def test_init_fine_tunes_from_the_file_and_keeps_its_weights(kind, files, tmp_path):
    path = files[kind]
    common = ("data=pets", f"data.root={files['pets']}", "batch=2", "epochs=1", *TINY_TRAIN)
    proc = run_module("gnrepro.train", "model=resnet50", "norm=gn", f"init={path}", "optim.base_lr=1e-30", *common,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = (tmp_path / "outputs/runs").glob("*/*/summary.json")
    assert json.loads(summary.read_text())["init"] == str(path)
    model = load_checkpoint(summary.parent / "last.pt")["model"]
    expected = file_tensors(kind, path)
    kept = [k for k in expected if not k.startswith("fc.")]
    assert len(kept) == len(expected) - 2
    # An LR of 1e-30 moves no nonzero float32 weight (the update is far below half its ulp), but a
    # weight that is exactly 0 (the own run's zero-initialized gammas and a few biases that never left
    # 0) moves by lr x gradient, ~1e-30: those may differ by 1e-20 at most; every other weight bitwise.
    def moved(k):
        nonzero = expected[k] != 0
        at_zero = model[k][~nonzero]
        return not torch.equal(model[k][nonzero], expected[k][nonzero]) or (at_zero.numel() and at_zero.abs().max() > 1e-20)

    different = [k for k in kept if moved(k)]
    assert not different, different[:5]
    assert model["fc.weight"].shape == (3, 2048) and not torch.equal(model["fc.weight"][:3], expected["fc.weight"][:3])
