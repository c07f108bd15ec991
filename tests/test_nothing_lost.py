"""Issue 24, "Nothing lost, ever": hostile run folders, data files, numbers, weight caches, signals and
concurrent launches, one table per class. Every case asserts the exit code, the one ``gnrepro:
error:`` line (or plan's and report's "damaged" listing), no traceback, nothing lost (the files that
were there are byte for byte as they were) and nothing left behind (no new folder, no temp file).

The fast tables run the real entry points in-process; the real-process cases (concurrent launches,
signals) are marked slow: each trains a tiny model (ResNet-14, 10 px digits, 8 images).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from gnrepro import plan, report, runfiles, train
from gnrepro.data import fake
from gnrepro.errors import ConfigError
from gnrepro.settings.preflight import job_config
from gnrepro.weights import fetch
from gnrepro.weights.load import load_into

TINY = ("model=resnet14", "batch=2", "workers=1", "epochs=1", "data.subset=8", "data.image_size=10",
        "eval_batch=512", "progress=false", "norm=bn")


# ------------------------------------------------------------------------------------------ helpers

def run_train(monkeypatch, capsys, cwd: Path, *overrides) -> tuple[int, str, str]:
    """``python -m gnrepro.train`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["gnrepro.train", *overrides])
    GlobalHydra.instance().clear()
    try:
        train.cli()
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


def run_tool(main, argv, monkeypatch, capsys, cwd: Path) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    GlobalHydra.instance().clear()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(code, out: str, err: str, expected: int = 2) -> str:
    """The one ``gnrepro: error:`` line (the only line on stderr), after checking the exit code."""
    lines = err.strip().splitlines()
    assert code == expected, (code, err)
    assert len(lines) == 1 and lines[0].startswith("gnrepro: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def snapshot(root: Path) -> dict:
    """Every file under ``root`` (links not followed) -> its bytes, or what it is if not a file."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[p] = ("link", os.readlink(p))
        elif p.is_file():
            out[p] = p.read_bytes()
        elif p.is_dir():
            out[p] = "dir"
        else:
            out[p] = "special"
    return out


def run_folder(tmp_path: Path, *extra) -> tuple[Path, dict]:
    """The folder of ``TINY`` (with ``extra``) under tmp_path, with the config the trainer would write."""
    cfg, _, folder = job_config([*TINY, *extra], multirun=False)
    folder = tmp_path / folder
    folder.mkdir(parents=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return folder, resolved


def complete_summary(**changes) -> dict:
    summary = {"status": "complete", "final_error": 12.5, "val_errors": [12.5], "batch": 2, "workers": 1,
               "epochs": 1, "seed": 0, "norm": "bn", "norm_tag": "bn", "model": "resnet14", "data": "digits",
               "conv": "plain", "epochs_done": 1, "final_epochs": 1}
    summary.update(changes)
    return summary


def metrics_row(epoch=1, **changes) -> dict:
    return {"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_error": 50.0, "val_loss": 1.0, "val_error": 40.0,
            "train_seconds": 1.0, "epoch_seconds": 1.5, "images_per_s": 8.0, "train_images": 8, **changes}


def nested(depth: int) -> str:
    return '{"status": "complete", "x": ' + "[" * depth + "]" * depth + "}"


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(12))


def _write(name: str, content):
    """A damage that writes ``content`` (text, bytes, or a callable of the path) to the file ``name``."""
    def damage(folder: Path):
        path = folder / name
        path.unlink(missing_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return damage


def _fifo(path: Path):
    os.mkfifo(path)


def _directory(path: Path):
    path.mkdir()
    (path / "inside").write_text("x")


def _jsonl(*rows: str) -> str:
    return "".join(r + "\n" for r in rows)


GOOD_ROW = json.dumps(metrics_row())

# ----------------------------------------------------------------------- class 1: damaged run files
# name -> (damage, the file named, a phrase of the reason). The trainer refuses each in one line with
# the fix; plan and report list the folder as damaged, naming the file, and go on.
DAMAGED = {
    # summary.json: numbers that are not, types, structure, non-files
    "summary 1e999": (_write("summary.json", '{"status": "complete", "final_error": 1e999}'),
                      "summary.json", "not a finite number"),
    "summary -1e999": (_write("summary.json", '{"status": "complete", "final_error": -1e999}'),
                       "summary.json", "not a finite number"),
    "summary -Infinity in a list": (_write("summary.json", json.dumps(complete_summary())[:-1] +
                                           ', "val_errors": [-Infinity]}'), "summary.json", "not JSON"),
    "summary complete without result": (_write("summary.json", '{"status": "complete"}'), "summary.json",
                                        "final_error is null"),
    "summary error of 250%": (_write("summary.json", json.dumps(complete_summary(final_error=250.0))),
                              "summary.json", "not a percentage"),
    "summary result a string": (_write("summary.json", json.dumps(complete_summary(final_error="12.5"))),
                                "summary.json", "final_error is '12.5'"),
    "summary batch a list": (_write("summary.json", json.dumps(complete_summary(batch=[2, 4]))),
                             "summary.json", "batch is [2, 4], not an integer"),
    "summary seed a bool": (_write("summary.json", json.dumps(complete_summary(seed=True))),
                            "summary.json", "seed is true, not an integer"),
    "summary error a dict": (_write("summary.json", json.dumps(complete_summary(status="failed", final_error=None,
                                                                                error={"why": "diverged"}))),
                             "summary.json", "error is"),
    "summary norm a number": (_write("summary.json", json.dumps(complete_summary(norm=5))), "summary.json",
                              "norm is 5, not a string"),
    "summary val_errors strings": (_write("summary.json", json.dumps(complete_summary(val_errors=["a"]))),
                                   "summary.json", "val_errors"),
    "summary status a number": (_write("summary.json", '{"status": 1}'), "summary.json", "not a run summary"),
    "summary deeply nested": (_write("summary.json", nested(100_000)), "summary.json", "nested deeper"),
    "summary nested 40": (_write("summary.json", nested(40)), "summary.json", "nested deeper than 32"),
    "summary huge integer": (_write("summary.json", '{"status": "complete", "final_error": ' + "9" * 5000 + "}"),
                             "summary.json", "not JSON"),
    "summary too large": (_write("summary.json", '{"status": "complete", "pad": "' + "x" * (5 << 20) + '"}'),
                          "summary.json", "larger than 4 MiB"),
    "summary a directory": (_write("summary.json", _directory), "summary.json", "a directory"),
    "summary a FIFO": (_write("summary.json", _fifo), "summary.json", "not a regular file"),
    "summary a link to /dev/zero": (_write("summary.json", lambda p: p.symlink_to("/dev/zero")), "summary.json",
                                    "not a regular file"),
    "summary a dangling link": (_write("summary.json", lambda p: p.symlink_to("/nonexistent/x")), "summary.json",
                                "cannot be read"),
    "summary not UTF-8": (_write("summary.json", b'{"status": "\xff\xfe"}'), "summary.json", "not UTF-8"),
    "summary unreadable": (_write("summary.json", lambda p: (p.write_text("{}"), p.chmod(0))), "summary.json",
                           "cannot be read"),
    # metrics.jsonl
    "metrics 1e999": (_write("metrics.jsonl", _jsonl(GOOD_ROW, json.dumps(metrics_row(2))[:-1] + ', "x": 1e999}')),
                      "metrics.jsonl", "not a finite number"),
    "metrics -1e999 val_error": (_write("metrics.jsonl", '{"epoch": 1, "val_error": -1e999}\n'), "metrics.jsonl",
                                 "not a finite number"),
    "metrics NaN": (_write("metrics.jsonl", '{"epoch": 1, "val_error": NaN}\n'), "metrics.jsonl", "line 1"),
    "metrics epoch a float": (_write("metrics.jsonl", '{"epoch": 1.0}\n'), "metrics.jsonl", "no integer 'epoch'"),
    "metrics epoch a bool": (_write("metrics.jsonl", '{"epoch": true}\n'), "metrics.jsonl", "no integer 'epoch'"),
    "metrics epochs repeat": (_write("metrics.jsonl", _jsonl(GOOD_ROW, GOOD_ROW)), "metrics.jsonl",
                              "does not follow"),
    "metrics val_error a string": (_write("metrics.jsonl", json.dumps(metrics_row(val_error="40")) + "\n"),
                                   "metrics.jsonl", "val_error is '40', not a number"),
    "metrics row a list": (_write("metrics.jsonl", "[1, 2]\n"), "metrics.jsonl", "no integer 'epoch'"),
    "metrics deeply nested": (_write("metrics.jsonl", '{"epoch": 1, "x": ' + "[" * 50_000 + "]" * 50_000 + "}\n"),
                              "metrics.jsonl", "nested deeper"),
    "metrics binary": (_write("metrics.jsonl", b"\x00\x01\x02\xff"), "metrics.jsonl", "not UTF-8"),
    "metrics a directory": (_write("metrics.jsonl", _directory), "metrics.jsonl", "a directory"),
    # config.yaml
    "config alias bomb": (_write("config.yaml", ALIAS_BOMB), "config.yaml", "more than 100 aliases"),
    "config model a scalar": (_write("config.yaml", "model: resnet14\nbatch: 2\n"), "config.yaml",
                              "model is 'resnet14', not a mapping"),
    "config optim a list": (_write("config.yaml", "optim: [1, 2]\n"), "config.yaml", "optim is [1, 2], not a mapping"),
    "config batch a string": (_write("config.yaml", "batch: two\n"), "config.yaml", "batch is 'two', not an integer"),
    "config python tag": (_write("config.yaml", "batch: !!python/object/apply:os.system ['true']\n"), "config.yaml",
                          "not YAML"),
    "config infinite number": (_write("config.yaml", "optim: {base_lr: .inf}\n"), "config.yaml", "not a finite number"),
    "config a date": (_write("config.yaml", "seed: 2024-01-01\n"), "config.yaml", "holds a date, not plain data"),
    "config deeply nested": (_write("config.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n"), "config.yaml",
                             "nested deeper"),
    "config a directory": (_write("config.yaml", _directory), "config.yaml", "a directory"),
    "config a FIFO": (_write("config.yaml", _fifo), "config.yaml", "not a regular file"),
    "config too large": (_write("config.yaml", "pad: " + "x" * (2 << 20) + "\n"), "config.yaml", "larger than 1 MiB"),
}


def damaged_folder(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    damage, name, needle = DAMAGED[case]
    folder, _ = run_folder(tmp_path)
    damage(folder)
    return folder, name, needle


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_file_stops_train_in_one_line_and_is_listed_by_plan_and_report(case, monkeypatch, capsys,
                                                                                      tmp_path):
    folder, name, needle = damaged_folder(tmp_path, case)
    if os.geteuid() == 0 and case == "summary unreadable":
        pytest.skip("root reads a file of mode 0")
    before = snapshot(folder)

    # plan and report: listed as damaged with the file and the reason, never a traceback
    code, out, err = run_tool(plan.main, list(TINY), monkeypatch, capsys, tmp_path)
    assert code == 0 and "Traceback" not in out + err, err
    (row,) = [line for line in out.splitlines() if str(folder) in line]
    assert row.startswith("damaged (") and f"{name}: " in row and needle in row, row
    assert "0 complete" in out
    code, out, err = run_tool(report.main, ["--runs", "outputs/runs", "--out", str(tmp_path / "out")], monkeypatch,
                              capsys, tmp_path)
    assert code == 0 and "Traceback" not in out + err, err
    assert f"damaged, not averaged: {folder.relative_to(tmp_path)} ({name}: " in out and needle in out, out
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*.md") if p.name not in ("not_complete.md", "unreadable.md"))
    assert not re.search(r"\b(inf|nan)\b", written, re.IGNORECASE), written

    # train: one line naming the file, its reason and the fix; the folder is left as it was
    code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY)
    line = one_error(code, out, err)
    assert f"{name} is damaged" in line and needle in line and runfiles.FIXES[name] in line, line
    after = {p: b for p, b in snapshot(folder).items()
             if ".hydra" not in p.parts and p.name not in ("train.log", ".lock")}
    assert after == before, "nothing written over or removed"
    assert not list(folder.glob(".*.tmp"))


# Where the run folder itself, or its lock, is not what it should be: train refuses in one line and
# touches nothing (the link's target above all); plan and report list the folder as damaged.
def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


FOLDERS = {
    "lock a symlink to a file": (lambda f, t: (f / ".lock").symlink_to(_victim(t)), "is a symlink"),
    "lock a dangling symlink": (lambda f, t: (f / ".lock").symlink_to(t / "nowhere"), "is a symlink"),
    "lock a directory": (lambda f, t: (f / ".lock").mkdir(), "is a directory"),
    "lock a FIFO": (lambda f, t: os.mkfifo(f / ".lock"), "not a regular file"),
    "folder a file": (lambda f, t: (shutil_rmtree(f), f.write_text("a file")), "a file, not a run folder"),
    "folder a symlink into /proc": (lambda f, t: (shutil_rmtree(f), f.symlink_to("/proc/self")),
                                    "a symlink to /proc/self"),
    "folder a symlink to a folder": (lambda f, t: (shutil_rmtree(f), (t / "elsewhere").mkdir(),
                                                   f.symlink_to(t / "elsewhere")), "a symlink to"),
}


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


@pytest.mark.parametrize("case", list(FOLDERS))
def test_a_run_folder_or_lock_that_is_not_one_is_refused_and_left_alone(case, monkeypatch, capsys, tmp_path):
    make, needle = FOLDERS[case]
    folder, _ = run_folder(tmp_path)
    make(folder, tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY)
    line = one_error(code, out, err)
    assert str(folder) in line or folder.name in line, line
    assert needle in line, line
    assert snapshot(tmp_path) == before, "the folder, the lock and any link's target are as they were"
    if case.startswith("folder"):
        code, out, err = run_tool(plan.main, list(TINY), monkeypatch, capsys, tmp_path)
        assert code == 0 and "Traceback" not in err and "damaged (" in out and needle in out, out + err


# -------------------------------------------------------------------------------- class 2: numbers
# A report never shows a number that is not one: evaluation of non-finite weights is refused before
# anything is appended to the published checks, and so is fine-tuning from them.

NUMBERS = {
    "NaN weight": float("nan"),
    "inf weight": float("inf"),
    "-inf weight": float("-inf"),
}


@pytest.mark.parametrize("case", list(NUMBERS))
def test_non_finite_weights_are_refused_before_evaluation_or_fine_tuning(case, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"][0, 1] = NUMBERS[case]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        load_into(model, state, [], skip_classifier=False, what="w.pth")
    assert "non-finite weights" in str(err.value) and "0.weight" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing was loaded"


@pytest.mark.slow
def test_evaluate_of_nan_weights_exits_2_and_appends_nothing(tmp_path):
    import torchvision

    root = fake.make_imagenet(tmp_path / "inet", classes=2, train_per_class=1, val_per_class=1, size=(40, 32))
    tv = torchvision.models.resnet50(weights=None)
    state = tv.state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    proc = subprocess.run([sys.executable, "-m", "gnrepro.evaluate", f"weights={tmp_path / 'nan.pth'}", "data=imagenet",
                           f"data.root={root}", "data.eval_resize=32", "data.eval_crop=32", "data.num_workers=0",
                           "device=cpu"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    line = one_error(proc.returncode, proc.stdout, proc.stderr)
    assert "non-finite weights" in line and "layer1.0.conv1.weight" in line
    assert not (tmp_path / "results").exists(), "no published check appended"


# --------------------------------------------------------------------------- class 3: data formats

def _cifar(tmp_path):
    return fake.make_cifar(tmp_path / "cifar", "cifar10")


def _dump(path: Path, obj, protocol=4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _batch(count=4, labels=None, data=None):
    return {"data": np.zeros((count, 3072), np.uint8) if data is None else data,
            "labels": list(range(count)) if labels is None else labels}


def _forged_shape(path: Path):
    """A batch whose array header claims 2**40 x 3072 bytes (3 PiB) over 12 KiB of data."""
    raw = pickle.dumps(_batch(), protocol=4)
    forged = raw.replace(struct.pack("<BB", 0x4B, 4) + struct.pack("<BH", 0x4D, 3072),
                         struct.pack("<Bi", 0x4A, 2 ** 30) + struct.pack("<BH", 0x4D, 3072))
    assert forged != raw
    path.write_bytes(forged)


def _huge_bytes(path: Path):
    """A pickle whose BINBYTES8 opcode claims 8 TiB that the file does not hold."""
    path.write_bytes(b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04data\x94\x8e"
                     + struct.pack("<Q", 8 << 40) + b"abc" + b"s.")


CIFAR = "cifar-10-batches-py"
DATA = {
    # CIFAR pickles: sizes checked against the header and the file, labels, classes
    "cifar array header claims petabytes": ("cifar10", f"{CIFAR}/data_batch_1", _forged_shape,
                                            "array header claiming"),
    "cifar byte string claims 8 TiB": ("cifar10", f"{CIFAR}/data_batch_2", _huge_bytes, "cannot load"),
    "cifar label out of range": ("cifar10", f"{CIFAR}/data_batch_1",
                                 lambda p: _dump(p, _batch(labels=[0, 1, 2, 10])), "label 10, outside the 10 classes"),
    "cifar negative label": ("cifar10", f"{CIFAR}/test_batch", lambda p: _dump(p, _batch(labels=[0, -1, 2, 3])),
                             "label -1"),
    "cifar labels strings": ("cifar10", f"{CIFAR}/data_batch_3", lambda p: _dump(p, _batch(labels=list("abcd"))),
                             "one integer label each"),
    "cifar labels floats": ("cifar10", f"{CIFAR}/data_batch_3", lambda p: _dump(p, _batch(labels=[0.0, 1.0, 2, 3])),
                            "one integer label each"),
    "cifar labels booleans": ("cifar10", f"{CIFAR}/data_batch_4", lambda p: _dump(p, _batch(labels=[True] * 4)),
                              "one integer label each"),
    "cifar fewer labels than images": ("cifar10", f"{CIFAR}/data_batch_5", lambda p: _dump(p, _batch(labels=[0])),
                                       "one integer label each"),
    "cifar data float": ("cifar10", f"{CIFAR}/data_batch_1",
                         lambda p: _dump(p, _batch(data=np.zeros((4, 3072), np.float32))), "uint8 rows"),
    "cifar rows of the wrong width": ("cifar10", f"{CIFAR}/data_batch_1",
                                      lambda p: _dump(p, _batch(data=np.zeros((4, 100), np.uint8))), "uint8 rows"),
    "cifar no class names": ("cifar10", f"{CIFAR}/batches.meta", lambda p: _dump(p, {"other": 1}), "class names"),
    "cifar zero classes": ("cifar10", f"{CIFAR}/batches.meta", lambda p: _dump(p, {"label_names": []}),
                           "names 0 class(es)"),
    "cifar one class": ("cifar10", f"{CIFAR}/batches.meta", lambda p: _dump(p, {"label_names": ["cat"]}),
                        "names 1 class(es)"),
    "cifar class names numbers": ("cifar10", f"{CIFAR}/batches.meta", lambda p: _dump(p, {"label_names": [1, 2]}),
                                  "class names"),
    "cifar truncated batch": ("cifar10", f"{CIFAR}/data_batch_2", lambda p: p.write_bytes(p.read_bytes()[:1000]),
                              "cannot load"),
    "cifar empty batch": ("cifar10", f"{CIFAR}/test_batch", lambda p: p.write_bytes(b""), "cannot load"),
    "cifar batch a directory": ("cifar10", f"{CIFAR}/test_batch", lambda p: (p.unlink(), p.mkdir()), "cannot load"),
    "cifar batch a FIFO": ("cifar10", f"{CIFAR}/data_batch_1", lambda p: (p.unlink(), os.mkfifo(p)), "cannot load"),
    "cifar object array": ("cifar10", f"{CIFAR}/data_batch_1",
                           lambda p: _dump(p, _batch(data=np.array([[1]], dtype=object))), "not of numbers"),
    "cifar100 label out of range": ("cifar100", "cifar-100-python/test",
                                    lambda p: _dump(p, {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]}),
                                    "label 100, outside the 100 classes"),
    # Pets annotations, parsed strictly
    "pets line with two fields": ("pets", "oxford-iiit-pet/annotations/trainval.txt",
                                  lambda p: p.write_text(p.read_text() + "Abyssinian_9 1\n"), "line 10 is not"),
    "pets class id not a number": ("pets", "oxford-iiit-pet/annotations/test.txt",
                                   lambda p: p.write_text("Abyssinian_4 one 1 1\n"), "line 1 is not"),
    "pets blank line": ("pets", "oxford-iiit-pet/annotations/trainval.txt",
                        lambda p: p.write_text("\n" + p.read_text()), "line 1 is not"),
    "pets class id 0": ("pets", "oxford-iiit-pet/annotations/trainval.txt",
                        lambda p: p.write_text(re.sub(r"^(Abyssinian_\d+) 1 1 1", r"\1 0 1 0", p.read_text(), flags=re.M)),
                        "not 1..3"),
    "pets breed with two ids": ("pets", "oxford-iiit-pet/annotations/test.txt",
                                lambda p: p.write_text(p.read_text().replace(" 1 ", " 2 ", 1)), "elsewhere"),
    "pets empty split file": ("pets", "oxford-iiit-pet/annotations/test.txt", lambda p: p.write_text(""),
                              "lists no images"),
    "pets binary split file": ("pets", "oxford-iiit-pet/annotations/test.txt", lambda p: p.write_bytes(b"\xff\x00"),
                               "cannot read"),
    "pets one breed": ("pets", "oxford-iiit-pet/annotations/trainval.txt",
                       lambda p: p.write_text("".join(l + "\n" for l in p.read_text().splitlines()[:3])),
                       "names 1 breed(s)"),
    "pets zero-byte jpeg": ("pets", "oxford-iiit-pet/images/Abyssinian_1.jpg", lambda p: p.write_bytes(b""),
                            "is empty (0 bytes)"),
    # image folders: broken images, symlink loops, images reached twice
    "imagenet zero-byte jpeg": ("imagenet", "train/n01440764/n01440764_0.JPEG", lambda p: p.write_bytes(b""),
                                "is empty (0 bytes)"),
    "imagenet garbage jpeg": ("imagenet", "val/n01440764/ILSVRC2012_val_00000001.JPEG",
                              lambda p: p.write_bytes(b"this is not an image" * 10), "cannot read image"),
    "imagenet png header only": ("imagenet", "train/n01441764/n01441764_0.JPEG",
                                 lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "cannot read image"),
    "imagenet symlink loop": ("imagenet", "train/n01440764/loop", lambda p: p.symlink_to(p.parent), "symlink loop"),
    "imagenet link to the train root": ("imagenet", "train/n01440764/up", lambda p: p.symlink_to(p.parent.parent),
                                        "symlink loop"),
    "imagenet image linked twice": ("imagenet", "train/n01441764/twice.JPEG",
                                    lambda p: p.symlink_to(p.parent.parent / "n01440764" / "n01440764_0.JPEG"),
                                    "are the same image"),
    "imagenet class folder linked twice": ("imagenet", "train/n01441764/sub",
                                           lambda p: p.symlink_to(p.parent.parent / "n01440764"), "already holds"),
    "imagenette symlink loop": ("imagenette", "imagenette2-320/train/n01440764/loop",
                                lambda p: p.symlink_to(p.parent), "symlink loop"),
}
MAKE = {"cifar10": lambda r: fake.make_cifar(r, "cifar10"), "cifar100": lambda r: fake.make_cifar(r, "cifar100"),
        "pets": lambda r: fake.make_pets(r, train_per_breed=3, test_per_breed=1, size=(40, 32)),
        "imagenet": lambda r: fake.make_imagenet(r, classes=2, train_per_class=2, val_per_class=1, size=(40, 32)),
        "imagenette": lambda r: fake.make_imagenette(r, train_per_class=1, val_per_class=1)}


@pytest.mark.parametrize("case", list(DATA))
def test_a_damaged_data_set_is_one_line_before_training_and_leaves_nothing(case, monkeypatch, capsys, tmp_path):
    data, file, damage, needle = DATA[case]
    root = MAKE[data](tmp_path / "data")
    damage(root / file)
    before = snapshot(tmp_path / "data")
    code, out, err = run_train(monkeypatch, capsys, tmp_path, f"data={data}", f"data.root={root}",
                               *(a for a in TINY if not a.startswith("data.image_size")), "data.num_workers=0",
                               *(("data.train_crop=32", "data.eval_resize=32", "data.eval_crop=32")
                                 if data in ("pets", "imagenet", "imagenette") else ()))
    line = one_error(code, out, err)
    assert needle in line, line
    named = file.split("/")[-1] if "link" not in case and "loop" not in case and "twice" not in case else ""
    assert named in line, line
    assert snapshot(tmp_path / "data") == before, "the data set is read, never changed"
    assert not (tmp_path / "results").exists(), "no run folder is left behind"


def test_a_broken_image_met_during_training_removes_the_new_run_folder(monkeypatch, capsys, tmp_path):
    """Above CHECK_HEADERS images only empty files are found up front; an image that breaks at the
    first batch ends the launch in one line and the run folder it made goes."""
    from gnrepro.data import images

    root = fake.make_imagenet(tmp_path / "data", classes=2, train_per_class=4, val_per_class=1, size=(40, 32))
    for p in (root / "train").rglob("*.JPEG"):
        p.write_bytes(p.read_bytes()[:40])  # the header survives, the data does not
    monkeypatch.setattr(images, "CHECK_HEADERS", 0)
    code, out, err = run_train(monkeypatch, capsys, tmp_path, "data=imagenet", f"data.root={root}", "data.num_workers=0",
                               "data.train_crop=32", "data.eval_resize=32", "data.eval_crop=32",
                               *(a for a in TINY if not a.startswith("data.image_size")))
    line = one_error(code, out, err)
    assert "cannot read image" in line and "data.skip_bad=true" in line
    assert not (tmp_path / "results").exists()


# -------------------------------------------------------------------------------- class 4: the cache

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over tmp_path/www (no internet): yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _serve(www: Path, rel: str, data: bytes) -> str:
    path = www / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


CACHE = {
    # what happens -> (action(www, base) returning (url, prefix), phrase of the one line)
    "cached copy changed since download": ("tamper", "changed since it was downloaded"),
    "cached copy replaced by another source's file": ("swap", "changed since it was downloaded"),
    "record names another URL": ("record", "has no record of being downloaded from"),
    "record damaged": ("record-junk", "has no record of being downloaded from"),
    "download does not match the published checksum": ("bad-prefix", "does not match its published checksum"),
    "server answers 404": ("404", "cannot download"),
    "server unreachable": ("closed", "cannot download"),
}


@pytest.mark.parametrize("case", list(CACHE))
def test_the_weights_cache_never_serves_a_file_it_cannot_vouch_for(case, http_root, tmp_path, monkeypatch):
    www, base = http_root
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    action, needle = CACHE[case]
    url = f"{base}/{_serve(www, 'a/model.pth', b'weights of a')}"
    if action == "bad-prefix":
        before = snapshot(tmp_path / "cache") if (tmp_path / "cache").exists() else {}
        with pytest.raises(ConfigError) as err:
            fetch.fetch(url, "00000000")
        assert needle in str(err.value) and "\n" not in str(err.value)
        assert not list((tmp_path / "cache").rglob("*")), "nothing kept"
        return
    if action == "404":
        url = f"{base}/missing/model.pth"
    if action == "closed":
        url = "http://127.0.0.1:9/model.pth"  # the discard port: nothing listens
    if action in ("404", "closed"):
        with pytest.raises(ConfigError) as err:
            fetch.fetch(url)
        assert needle in str(err.value) and str(fetch.cached_path(url)) in str(err.value)
        assert not list((tmp_path / "cache").rglob("*")), "nothing kept"
        return
    got = fetch.fetch(url)
    assert got.read_bytes() == b"weights of a"
    if action == "tamper":
        got.write_bytes(b"changed")
    elif action == "swap":
        got.write_bytes(b"weights of b")
    elif action == "record":
        (got.parent / fetch.RECORD).write_text(json.dumps({"url": base + "/b/model.pth",
                                                           "sha256": fetch.sha256(got)}))
    elif action == "record-junk":
        (got.parent / fetch.RECORD).write_text('{"url": ')
    before = snapshot(tmp_path / "cache")
    with pytest.raises(ConfigError) as err:
        fetch.fetch(url)
    assert needle in str(err.value) and "\n" not in str(err.value) and str(got.parent) in str(err.value)
    assert snapshot(tmp_path / "cache") == before, "the cache is left for the user to inspect"


def test_two_sources_with_one_file_name_never_share_a_cached_copy(http_root, tmp_path, monkeypatch):
    www, base = http_root
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    a = fetch.fetch(f"{base}/{_serve(www, 'a/model.safetensors', b'A')}")
    b = fetch.fetch(f"{base}/{_serve(www, 'b/model.safetensors', b'B')}")
    c = fetch.fetch((www / "a/model.safetensors").as_uri())  # file:// works through torch.hub too
    assert a != b != c and a.name == b.name == "model.safetensors"
    assert (a.read_bytes(), b.read_bytes(), c.read_bytes()) == (b"A", b"B", b"A")
    (www / "a/model.safetensors").write_bytes(b"A changed upstream")
    assert fetch.fetch(f"{base}/a/model.safetensors").read_bytes() == b"A", "served from the cache, re-checked"
    prefix = fetch.sha256(www / "b/model.safetensors")[:8]
    assert fetch.fetch(f"{base}/b/model.safetensors", prefix) == b  # the published checksum holds too


def test_a_file_put_by_hand_where_the_error_says_is_taken_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("GNREPRO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    url = "http://127.0.0.1:9/resnet50-x.pth"
    target = fetch.cached_path(url)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"downloaded by hand")
    assert fetch.fetch(url) == target
    assert json.loads((target.parent / fetch.RECORD).read_text())["sha256"] == fetch.sha256(target)
    target.write_bytes(b"changed")
    with pytest.raises(ConfigError, match="changed since it was downloaded"):
        fetch.fetch(url)


# ---------------------------------------------------------------------- class 5: the command line

@pytest.mark.parametrize("argv", [["-m", "seed=0,1"], ["seed=0,1", "-m"], ["seed=0,1", "--multirun"],
                                  ["norm=bn", "-m", "seed=0,1"]])
def test_multirun_flag_anywhere_on_the_line(argv, monkeypatch, capsys, tmp_path):
    started = []
    monkeypatch.setattr(train, "run", lambda cfg, run_dir, choices=None: started.append(cfg.seed) or
                        {"final_error": 1.0})
    code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY, *argv)
    assert code == 0 and "usage" not in err and "Traceback" not in err, err
    assert started == [0, 1]


def test_startup_interrupt_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path):
    """A signal while Hydra sets the job up (here: raised from its task's start) ends the launch with
    one line and exit 3, and the folder the launch locked goes."""
    from gnrepro.engine.preemption import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(train, "previous_state", interrupted)
    code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY)
    assert code == 3 and err.strip().splitlines() == [
        "gnrepro: stopped: SIGINT received before training started; nothing was trained or kept; relaunch the "
        "same command"], err
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------- class 6: real processes (slow)

def _default_signals() -> None:
    """In the child: the stop signals at their default disposition, as from an interactive shell. A test
    run under ``nohup`` (SIGHUP ignored) or as a background job (SIGINT ignored) would otherwise pass
    that on, and the trainer rightly keeps an inherited "ignore" (test_an_ignored_signal_stays_ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def start(cwd: Path, *overrides, env_extra=None, ignore=()) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env_extra or {})}

    def child() -> None:
        _default_signals()
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "gnrepro.train", *TINY, *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=child)


def finish(proc: subprocess.Popen, timeout=600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def stderr_lines(err: str) -> list[str]:
    """stderr without the trainer's log lines (Hydra logs to stderr too)."""
    return [line for line in err.strip().splitlines() if line.startswith("gnrepro: ")]


@pytest.mark.slow
def test_two_identical_launches_at_once_one_trains_the_other_is_refused_and_touches_nothing(tmp_path):
    procs = [start(tmp_path), start(tmp_path)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [(c, e[-2000:]) for c, _, e in results]
    refused = next(e for c, _, e in results if c == 2)
    assert stderr_lines(refused) == [line for line in refused.strip().splitlines()] and "already running" in refused
    assert all("Traceback" not in e for _, _, e in results)
    (folder,) = (tmp_path / "outputs/runs").glob("*/*")
    assert runfiles.read_summary(folder)["status"] == "complete"
    assert len(runfiles.read_jsonl(folder / "metrics.jsonl")) == 1


@pytest.mark.slow
def test_two_sweeps_over_the_same_folders_at_once(tmp_path):
    procs = [start(tmp_path, "-m", "seed=0,1"), start(tmp_path, "seed=0,1", "-m")]
    results = [finish(p) for p in procs]
    report_ = "\n\n".join(f"exit {c}:\n{e[-3000:]}" for c, _, e in results)
    assert sorted(c for c, _, _ in results) in ([0, 2], [2, 2]), report_
    assert all("Traceback" not in e for _, _, e in results)
    for code, _, err in results:
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and "already running" in err
    assert 0 in [c for c, _, _ in results], "at least one sweep ran: " + report_
    for seed in (0, 1):
        folder = tmp_path / f"outputs/runs/digits_resnet14/bn_b2x1_e1_s{seed}_sub8"
        assert runfiles.read_summary(folder)["status"] == "complete"


@pytest.mark.slow
def test_plan_and_report_beside_training_never_fail_or_see_damage(tmp_path):
    proc = start(tmp_path, "checkpoint_steps=1")
    seen = set()
    while proc.poll() is None:
        for module, args in (("gnrepro.plan", list(TINY)), ("gnrepro.report", ["--out", "out"])):
            side = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=600)
            assert side.returncode == 0 and "Traceback" not in side.stderr, side.stderr
            assert "damaged" not in side.stdout, side.stdout
            if module == "gnrepro.plan":
                seen.add(side.stdout.splitlines()[1].split()[0])
    assert proc.wait() == 0, proc.communicate()
    assert seen <= {"pending", "partial", "complete"} and seen, seen


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_a_signal_during_start_up_is_one_line_and_leaves_nothing(sig, tmp_path):
    proc = start(tmp_path)
    time.sleep(1.5)  # importing torch and Hydra, or checking the command line
    proc.send_signal(sig)
    code, out, err = finish(proc)
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gnrepro: stopped: ") and sig.name in lines[0], err
    assert "Traceback" not in out + err
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.pt"))
    assert not (tmp_path / "outputs").exists(), sorted((tmp_path / "outputs").rglob("*"))


@pytest.mark.slow
def test_an_ignored_signal_stays_ignored(tmp_path):
    """Under nohup (SIGHUP ignored when the run starts) a closed terminal does not stop the run."""
    proc = start(tmp_path, ignore=(signal.SIGHUP,))
    time.sleep(1.5)
    proc.send_signal(signal.SIGHUP)
    code, out, err = finish(proc)
    assert code == 0 and "Traceback" not in err, err
    (folder,) = (tmp_path / "outputs/runs").glob("*/*")
    assert runfiles.read_summary(folder)["status"] == "complete"


@pytest.mark.slow
def test_ctrl_c_mid_run_checkpoints_and_the_relaunch_resumes(tmp_path):
    proc = start(tmp_path, "data.subset=32", "checkpoint_steps=1", "epochs=2")
    folder = tmp_path / "outputs/runs/digits_resnet14/bn_b2x1_e2_s0_sub32"
    deadline = time.monotonic() + 600
    while not (folder / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 3, err
    assert [line for line in err.strip().splitlines() if "gnrepro:" in line] == \
        [line for line in err.strip().splitlines() if line.startswith("gnrepro: stopped: SIGINT received")]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert runfiles.load_checkpoint(folder / "last.pt")["config"]["seed"] == 0
    code, out, err = finish(start(tmp_path, "data.subset=32", "checkpoint_steps=1", "epochs=2"))
    assert code == 0, err
    assert "resuming" in out + err  # Hydra logs to stdout
    assert runfiles.read_summary(folder)["status"] == "complete"


# ------------------------------------------------------- class 1b: unwritable places, other files read

UNWRITABLE = {
    "train hydra.run.dir in /proc": (train, ["hydra.run.dir=/proc/gnrepro-run"], "/proc/gnrepro-run is not writable"),
    "train results_dir in /proc": (train, ["results_dir=/proc/gnrepro"], "results_dir='/proc/gnrepro' is not writable"),
    "train hydra.run.dir under a file": (train, ["hydra.run.dir=afile/run"], "cannot be created"),
    "report --out in /proc": (report, ["--runs", "runs", "--out", "/proc/gnrepro-out"], "--out /proc/gnrepro-out is not "
                                                                                       "writable"),
    "report --out under a file": (report, ["--runs", "runs", "--out", "afile/x"], "is a file; choose another --out"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_an_unwritable_place_is_one_line_before_anything_is_written(case, monkeypatch, capsys, tmp_path):
    module, argv, needle = UNWRITABLE[case]
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "runs").mkdir()
    before = snapshot(tmp_path)
    if module is train:
        code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY, *argv)
    else:
        code, out, err = run_tool(report.main, argv, monkeypatch, capsys, tmp_path)
    assert needle in one_error(code, out, err)
    assert snapshot(tmp_path) == before


def _checks(tmp_path: Path, text: str | None = None, make=None) -> Path:
    folder = tmp_path / "runs" / "published_checks"
    folder.mkdir(parents=True)
    if make:
        make(folder / "checks.jsonl")
    else:
        (folder / "checks.jsonl").write_text(text)
    return folder


GOOD_CHECK = json.dumps({"weights": "R-50-GN", "data": "imagenet", "images": 50000, "top1_err": 24.1})
CHECKS = {
    "a line with 1e999": (GOOD_CHECK + '\n{"weights": "x", "top1_err": 1e999}\n', None, 1),
    "a line with -Infinity": (GOOD_CHECK + '\n{"weights": "x", "top1_err": -Infinity}\n', None, 1),
    "a line that is a list": (GOOD_CHECK + "\n[1, 2]\n", None, 1),
    "a line nested deep": (GOOD_CHECK + "\n" + "[" * 10000 + "]" * 10000 + "\n", None, 1),
    "a torn last line": (GOOD_CHECK + '\n{"weights": "y", "top1', None, 1),
    "the file a directory": (None, lambda p: p.mkdir(), 0),
    "the file a FIFO": (None, lambda p: os.mkfifo(p), 0),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_report_shows_only_published_checks_that_are_numbers(case, monkeypatch, capsys, tmp_path):
    text, make, rows = CHECKS[case]
    folder = _checks(tmp_path, text, make)
    before = snapshot(folder)
    code, out, err = run_tool(report.main, ["--runs", "runs", "--out", "out"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "Traceback" not in out + err, err
    shown = tmp_path / "out" / "published_model_checks.md"
    if rows:
        table = shown.read_text()
        assert "24.10" in table and table.count("\n| ") == 1 + rows, table
        assert not re.search(r"\b(inf|nan)\b", table, re.IGNORECASE)
    else:
        assert not shown.exists() and "damaged, not shown: " in out and "checks.jsonl" in out, out
    assert snapshot(folder) == before


def test_a_damaged_probe_file_is_named_and_the_figure_drawn_from_the_next_seed(monkeypatch, capsys, tmp_path):
    from fake_runs import fake_run

    runs = tmp_path / "runs"
    folders = [fake_run(runs, data="digits", model="vgg16", norm="gn", batch=32, workers=1, epochs=6, seed=s)
               for s in (0, 1)]
    (folders[0] / "probe.jsonl").write_text('{"step": 1, "p1": 1e999}\n')
    (folders[1] / "probe.jsonl").write_text(json.dumps({"step": 1, "layer": "conv5_3", "p1": -1.0, "p99": 1.0}) + "\n")
    code, out, err = run_tool(report.main, ["--runs", "runs", "--out", "out"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "Traceback" not in out + err, err
    assert f"damaged, not drawn: {(folders[0] / 'probe.jsonl').relative_to(tmp_path)} (line 1: 1e999 is not a finite number)" in out
    assert list((tmp_path / "out").rglob("fig6_feature_distribution.png"))


def test_a_sweep_stopped_by_a_failed_job_leaves_no_folder_for_the_jobs_it_never_started(monkeypatch, capsys,
                                                                                         tmp_path):
    """Every job's folder is locked before the first job; the folders of jobs that never ran go."""
    from gnrepro.engine.loop import DivergedError

    def diverges(cfg, run_dir, choices=None):
        with runfiles.RunLock(run_dir):
            runfiles.write_json(run_dir / "summary.json", complete_summary(status="failed", final_error=None))
        raise DivergedError("training loss became nan")

    monkeypatch.setattr(train, "run", diverges)
    code, out, err = run_train(monkeypatch, capsys, tmp_path, *TINY, "-m", "seed=0,1,2")
    assert code == 1 and "Traceback" not in err
    runs = tmp_path / "outputs/runs/digits_resnet14"
    assert sorted(p.name for p in runs.iterdir()) == ["bn_b2x1_e1_s0_sub8"], "seeds 1 and 2 never started"
    assert runfiles.run_status(runs / "bn_b2x1_e1_s0_sub8").status == "failed"
