"""A run's identity: which settings change its result, and how each one names it.

One table, ``SETTINGS``, says for every result-changing setting whether it is spelled out in the
run folder's name, whether the report keeps runs that differ in it in separate tables, and, for
the paper's optimizer protocol (Sec. 4.1; docs/PROTOCOL.md), its paper value: a run that departs
from one of those gets a short hash suffix (``_h1a2b3c``) so two protocols never share a folder.
From it derive:

- the run folder (``run_name``, the OmegaConf resolver of ``hydra.run.dir``):
  ``<data>_<model>/<normtag>_b<batch>x<workers>_e<epochs>_s<seed>[_sub<N>][_from-<init>][_bf16|_fp16][_h<hash>]``;
- the report's grouping columns (``GROUP_COLUMNS``, read by gnrepro.runs.results);
- the resume guard's comparison (``settings_diff``): every key but ``RUNTIME_KEYS``, written the
  same way (``canonical``), with ``ADDED_KEYS`` filling keys older run records lack.

The hash covers base_lr, momentum, weight decay, the LR milestones and the warm-up: two presets
that differ only in one of them never share a folder. It also covers the digits proxy's data
protocol (``data_departures``): a ``data.augment`` other than the committed proxy's
(configs/proxy/digits.yaml), or augmented val copies (``data.augment_val``), so a pilot
with a stronger jitter never shares a folder or a report table with the committed sweep. The CPU
proxy's protocol (always warm up, for 2 epochs: configs/proxy/digits.yaml) departs from the
paper's, so its runs carry a hash; the committed ones were renamed to it when the warm-up joined the
hash (2026-11-29). The pilots under results/pilots were filed by hand under the pilot's name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gnrepro.engine.execution import DEFAULTS as EXECUTION_DEFAULTS
from gnrepro.layers.norm_registry import NORM_KINDS, norm_tag
from gnrepro.layers.norms import DEFAULT_GROUPS
from gnrepro.resources import CONFIGS

_UNSET = object()


@dataclass(frozen=True)
class Setting:
    key: str                # the config key (dotted)
    named: bool = False     # spelled out in the run folder's name
    grouped: bool = False   # the report never puts runs that differ in it in one table
    paper: object = _UNSET  # hashed into the folder name when a run departs from this value


SETTINGS = (
    Setting("data.name", named=True, grouped=True),
    Setting("model.name", named=True, grouped=True),
    Setting("norm", named=True),              # as its tag: gnrepro.layers.norm_registry.norm_tag
    Setting("conv", named=True),              # the tag's -ws
    Setting("batch", named=True),
    Setting("workers", named=True, grouped=True),
    Setting("epochs", named=True, grouped=True),
    Setting("seed", named=True),
    Setting("init", named=True, grouped=True),  # grouped as "pretrained": fine-tuned or from scratch
    Setting("data.subset", named=True, grouped=True),  # "_sub<N>" in the name; the full split unnamed
    Setting("data.image_size", grouped=True),
    Setting("precision", named=True, grouped=True),  # "_bf16"/"_fp16" in the name; fp32 (the paper's) unnamed
    Setting("optim.base_lr", paper=0.1),      # LR at 32 images per worker
    Setting("optim.momentum", paper=0.9),
    Setting("optim.weight_decay", paper=1e-4),
    Setting("optim.milestones", paper=[0.3, 0.6, 0.9]),
    Setting("optim.warmup", paper="auto"),    # warm up only above base_lr (the authors' code)
    Setting("optim.warmup_epochs", paper=5),
)
PAPER = {s.key: s.paper for s in SETTINGS if s.paper is not _UNSET}
# The report's grouping columns (gnrepro.runs.results): the grouped settings, ``pretrained`` for init,
# and ``protocol`` for the hash of the optimizer protocol ("" = the paper's).
GROUP_COLUMNS = ["data", "model", "workers", "epochs", "subset", "image_size", "pretrained", "precision", "protocol"]
assert len(GROUP_COLUMNS) == sum(s.grouped for s in SETTINGS) + 1

# Settings that may change between launches of one run without changing its result; every other
# key does (the resume guard compares all of them).
RUNTIME_KEYS = (
    "progress", "progress_seconds", "device", "eval_batch", "debug", "results_dir", "checkpoint_steps",
    "keep_checkpoint", "logger",
    "data.num_workers", "data.root", "data.download", "data.pin_memory", "data.persistent_workers",
    "data.prefetch_factor", "probe",
    # how a step executes: the same math, other float rounding (like device); gnrepro/engine/execution.py
    "log_every", "channels_last", "compile", "cudnn_benchmark",
)
# Keys added after runs were made, with the value that reproduces the runs made before them: a saved
# config without the key is the same setting as one with this value.
ADDED_KEYS = {"norm.eval_stats": "running", "norm.precise_batches": 100, "norm.frozen": False,
              "init": None, "init_format": "auto", "data.augment_val": 0,
              "data.augment.contrast": 1.0, "data.augment.brightness": 0.0,
              "precision": EXECUTION_DEFAULTS["precision"]}


# The committed proxy protocol's augmentation, read from its preset (defined there, once): the
# reference a run's data.augment is hashed against, as its optimizer is against the paper's.
PROXY_AUGMENT = OmegaConf.to_container(
    OmegaConf.load(CONFIGS / "proxy" / "digits.yaml").data.augment)


def flatten(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def canonical(flat: dict) -> dict:
    """Settings that mean the same written the same way: GN with neither ``groups`` nor
    ``channels_per_group`` is G = 32, the run folder ``gn32`` either way (Table 3's G = 32 run is
    Figure 1's GN run)."""
    kind = NORM_KINDS.get(flat.get("norm.name"))
    if kind and kind.grouped and flat.get("norm.groups") is None and flat.get("norm.channels_per_group") is None:
        flat = {**flat, "norm.groups": DEFAULT_GROUPS}
    return flat


def is_runtime(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RUNTIME_KEYS)


def settings_diff(old: dict, new: dict) -> list[str]:
    """``key (old -> new)`` for every result-changing setting that differs between two configs."""
    a, b = canonical(flatten(old)), canonical(flatten(new))
    old_value = lambda k: a.get(k, ADDED_KEYS.get(k, "unset"))  # noqa: E731
    new_value = lambda k: b.get(k, ADDED_KEYS.get(k, "unset"))  # noqa: E731
    return [f"{k} ({old_value(k)!r} -> {new_value(k)!r})"
            for k in sorted(set(a) | set(b)) if not is_runtime(k) and old_value(k) != new_value(k)]


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def data_departures(data) -> dict:
    """``{"data.augment.<key>": value}`` for each augmentation value that departs from the committed
    proxy's (``PROXY_AUGMENT``; a key older records lack takes its ``ADDED_KEYS`` value), plus
    ``data.augment_val`` when val images are scored on augmented copies. A data set without
    augmentation (``data.augment`` null or absent: the plain data set) departs from nothing."""
    data = _plain(data) or {}
    changed = {}
    augment = data.get("augment")
    if isinstance(augment, dict):
        for key, reference in PROXY_AUGMENT.items():
            value = augment.get(key, ADDED_KEYS.get(f"data.augment.{key}", reference))
            if value != reference:
                changed[f"data.augment.{key}"] = value
    if data.get("augment_val"):
        changed["data.augment_val"] = data["augment_val"]
    return changed


def protocol_hash(optim, data=None) -> str:
    """``h`` + 6 hex digits of the optimizer settings that depart from the paper's and the data
    settings that depart from the committed proxy's (``data_departures``), or "" if none does
    (``optim`` unknown: a run record without it)."""
    optim = _plain(optim) or {}
    changed = {}
    for key, paper in PAPER.items():
        value = optim.get(key.split(".", 1)[1], paper)
        if value != paper:
            changed[key] = value
    changed.update(data_departures(data))
    if not changed:
        return ""
    return "h" + hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:6]


def init_tag(init) -> str:
    """``_from-<name>`` for a run fine-tuned from released weights (a file: its name), else empty."""
    if init in (None, "", "None"):
        return ""
    name = str(init).rstrip("/").rsplit("/", 1)[-1]
    return "_from-" + "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def subset_tag(data_cfg) -> str:
    """``_sub<N>`` for a run on a fixed N-image subset of the train split, empty for the full split.
    Why named: a quick subset check must never take (and lock with its own result) the folder of the
    full run with the same settings. N is written as an integer: Hydra may hand ``64.0`` from a sweep
    or an older record, and one run must have one name."""
    data = _plain(data_cfg)
    subset = data.get("subset") if isinstance(data, dict) else None
    return "" if subset is None else f"_sub{int(subset)}"


def precision_tag(precision) -> str:
    """``_bf16`` / ``_fp16`` for a run trained in lower precision; empty for fp32 (the paper's)."""
    return "" if precision in (None, "", "fp32") else f"_{precision}"


def run_name(data: str, model: str, norm, conv, batch, workers, epochs, seed, init=None, optim=None,
             precision=None, data_cfg=None) -> str:
    """``<data>_<model>/<norm>_b<batch>x<workers>_e<epochs>_s<seed>[_sub<N>][_from-<init>][_bf16|_fp16][_h<hash>]``:
    one folder per setting; a subset run never shares a folder with the full run, a fine-tuned run
    never shares a folder with a run from scratch, nor a
    bf16/fp16 run with an fp32 one, nor a run with another optimizer or data protocol
    (``protocol_hash`` of ``optim`` and ``data_cfg``, the whole data node) with one under the
    reference protocol."""
    suffix = protocol_hash(optim, data_cfg)
    return (f"{data}_{model}/{norm_tag(norm, conv)}_b{batch}x{workers}_e{epochs}_s{seed}{subset_tag(data_cfg)}"
            + init_tag(init) + precision_tag(precision) + (f"_{suffix}" if suffix else ""))


if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)
