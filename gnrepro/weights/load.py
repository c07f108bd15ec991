"""Load released weights into a gnrepro ResNet: resolve a name, path or URL, read the file in its
format, convert it and check it strictly against the model (one line naming what does not fit)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import NORM_KINDS
from gnrepro.layers.norms import DEFAULT_GROUPS
from gnrepro.weights import formats
from gnrepro.weights.catalog import CATALOG, Released, lookup
from gnrepro.weights.fetch import fetch, is_url

log = logging.getLogger("gnrepro")
CLASSIFIER = ("fc.weight", "fc.bias")


@dataclass
class Source:
    """A weight file ready to convert: where it is, its format and input convention."""
    spec: str
    path: Path
    format: str
    convention: formats.InputConvention
    entry: Released | None = None
    tensors: dict = field(default_factory=dict, repr=False)  # read once (torch files)

    def describe(self) -> str:
        return self.entry.name if self.entry else str(self.path)

    def num_classes(self) -> int | None:
        """Rows of the file's classifier (None when it has none)."""
        fc = self.tensors.get("pred_w" if self.format == "caffe2" else "fc.weight")
        return None if fc is None else int(fc.shape[0])


def _names(keys, limit: int = 6) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_setting(entry: Released, cfg, key: str) -> None:
    """The composed config must build the network the released file holds."""
    wrong = []
    if cfg.model.name != entry.model:
        wrong.append(f"model={entry.model}")
    if cfg.norm.name != entry.norm_name or cfg.conv.name != entry.conv:
        wrong.append(f"norm={entry.norm}")
    elif NORM_KINDS[entry.norm_name].grouped and (cfg.norm.get("groups") not in (None, DEFAULT_GROUPS)
                                                   or cfg.norm.get("channels_per_group") is not None):
        wrong.append(f"norm.groups=null norm.channels_per_group=null (G={DEFAULT_GROUPS})")
    if cfg.model.get("small_input"):
        wrong.append("a data set with 224 px images (the standard stem)")
    if wrong:
        raise ConfigError(f"{key}={entry.name} holds a {entry.model} with norm={entry.norm}; this config builds "
                          f"model={cfg.model.name} norm={cfg.norm.name} conv={cfg.conv.name}; set {' '.join(wrong)}")


def resolve(spec: str, fmt: str, conv: str, key: str = "weights") -> Source:
    """Find the file behind ``spec`` (a catalogue name, a path or an URL) and its format."""
    entry = lookup(spec)
    if entry is not None:
        path = fetch(entry.url, entry.sha256_prefix)
        fmt = entry.format if fmt == "auto" else fmt
    elif is_url(spec):
        path = fetch(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}={spec} is neither a released model ({', '.join(CATALOG)}) nor an existing file")
    if fmt not in ("auto", *formats.FORMATS):
        raise ConfigError(f"unknown {key}_format {fmt!r}; choose auto or one of: {', '.join(formats.FORMATS)}")
    tensors, run_config = {}, None
    if fmt == "caffe2" or (fmt == "auto" and path.suffix == ".pkl"):
        fmt = "caffe2"
        tensors = formats.read_caffe2(path)
    else:
        tensors, run_config = formats.read_torch(path)
        if fmt == "auto":
            if run_config is not None:
                fmt = "gnrepro"
            elif conv == "ws":
                raise ConfigError(f"{path}: say how its WS convs were trained: {key}_format=ws_official (the WS "
                                  f"authors' code) or {key}_format=gnrepro (timm's StdConv2d, this project)")
            else:
                fmt = "torchvision"
    if fmt == "caffe2":
        convention = formats.CAFFE2_INPUT
    elif fmt == "gnrepro" and run_config is not None:
        data = run_config.get("data", {})
        convention = formats.InputConvention(1.0, tuple(data.get("mean", formats.IMAGENET_MEAN)),
                                             tuple(data.get("std", formats.IMAGENET_STD)))
    else:
        convention = formats.TORCH_INPUT
    return Source(spec, path, fmt, convention, entry, tensors)


def convert(source: Source, model: nn.Module, conv_cfg, std) -> tuple[dict, list]:
    """The file's weights under the model's names, with the input scale and channel order folded into
    conv1; also the names in the file that have no place in the model."""
    target = model.state_dict()
    if source.format == "caffe2":
        state, unused = formats.from_caffe2(source.tensors, target, source.path)
    else:
        state = dict(source.tensors)
        if source.format == "ws_official":
            eps = conv_cfg.get("eps", 1e-5)
            state = {k: formats.ws_official_to_gnrepro(v, eps) if v.dim() == 4 else v for k, v in state.items()}
        unused = []
    if "conv1.weight" in state:
        state["conv1.weight"] = formats.fold_input(state["conv1.weight"], source.convention, std,
                                                   ws=conv_cfg.name == "ws")
    return state, unused


def load_into(model: nn.Module, state: dict, unused: list, *, skip_classifier: bool, what: str) -> None:
    """Copy ``state`` into ``model``, strictly: every key but (optionally) the classifier must be
    there with its shape, and nothing else may be; otherwise one line names the keys."""
    target = model.state_dict()
    state = {k: v for k, v in state.items() if k in target or not k.endswith("num_batches_tracked")}
    if skip_classifier:
        state = {k: v for k, v in state.items() if k not in CLASSIFIER}
    missing = [k for k in target if k not in state and not (skip_classifier and k in CLASSIFIER)
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target] + unused
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
              if k in target and v.shape != target[k].shape]
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and k in target
           and not bool(torch.isfinite(v).all())]
    if bad:  # issue 24, item 4: NaN/inf weights would evaluate (or fine-tune) to a number that is not one
        raise ConfigError(f"{what} holds non-finite weights (NaN or infinity) in {_names(bad, 3)}; the file is "
                          "damaged: download it again or check where it came from")
    if missing or unexpected or shapes:
        parts = [f"missing keys: {_names(missing)}" if missing else "",
                 f"unexpected keys: {_names(unexpected)}" if unexpected else "",
                 f"shapes (file vs model): {_names(shapes, 3)}" if shapes else ""]
        raise ConfigError(f"{what} does not fit this model: {'; '.join(p for p in parts if p)}; "
                          "check model=/norm= or the file")
    with torch.no_grad():
        for key, value in state.items():
            target[key].copy_(value)


def load_released(model: nn.Module, source: Source, cfg, *, skip_classifier: bool) -> dict:
    """Convert ``source`` and load it into ``model`` for inputs normalized with ``cfg.data``; returns
    what was loaded and how far ``data.mean`` is from the publisher's (0 = the exact function)."""
    state, unused = convert(source, model, cfg.conv, list(cfg.data.std))
    load_into(model, state, unused, skip_classifier=skip_classifier, what=f"{source.describe()} ({source.format})")
    offset = formats.mean_offset(source.convention, list(cfg.data.mean))
    if offset > 1e-6:
        log.warning("%s expects inputs minus the mean %s (RGB, [0,1]); data.mean=%s differs by up to %.3g in the "
                    "file's input units, so the converted model starts from a slightly shifted input",
                    source.describe(), [round(m, 6) for m in source.convention.rgb_mean01], list(cfg.data.mean), offset)
    return {"weights": source.describe(), "file": str(source.path), "format": source.format,
            "input_mean": source.convention.rgb_mean01, "mean_offset": offset}
