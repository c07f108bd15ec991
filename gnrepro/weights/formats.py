"""Read released weight files and convert them into gnrepro's ResNet state dict (torchvision names).

Formats:

* ``caffe2``: the GN paper's authors' Caffe2 models (Detectron's ``R-50-GN.pkl``): a pickled dict of
  numpy arrays, optionally under a ``blobs`` key, with ``*_momentum`` solver entries that are skipped.
  Names: ``conv1_w`` + ``conv1_gn_s/_b`` (stem), ``res<stage>_<block>_branch2{a,b,c}_w`` +
  ``..._gn_s/_b`` (bottleneck), ``res<stage>_<block>_branch1_w`` + ``_gn_s/_b`` (projection),
  ``pred_w/pred_b`` (classifier); stage = torchvision's layer + 1. The GN models put the stride on
  the 3x3 conv (Detectron's STRIDE_1X1: False), GN with G=32 and eps 1e-5, convs without bias: the
  same network as ``model=resnet50 norm=gn``. Input: BGR, 0-255, minus the pixel mean
  (102.9801, 115.9465, 122.7717), no std. Read with an unpickler that only builds numpy arrays,
  dtypes and plain containers: anything else in the file is refused before it can run.
* ``torchvision``: a torch state dict with torchvision's names (``torch.load(weights_only=True)``,
  or ``.safetensors``), RGB in [0, 1] with ImageNet's mean/std. Also timm's ResNets, and timm's training
  checkpoints (``CheckpointSaver``: the weights under ``state_dict``, the run's ``argparse.Namespace``
  of settings under ``args``, which is the one class allowed beyond weights_only's tensors).
* ``ws_official``: the Weight Standardization authors' checkpoints: torchvision names (under
  ``state_dict``, with DataParallel's ``module.`` prefix; ``gnN`` for ``bnN`` in OpenMMLab's mirror),
  every conv standardized as (w - mean) / (std + 1e-5) with the *unbiased* std, GN G=32 eps 1e-5.
  gnrepro's WS conv (timm's StdConv2d) computes (w - mean) / sqrt(var + eps) with the biased
  variance, so each filter is re-parameterized exactly: w' = a * w_hat with a = sqrt(eps / (1 - v)),
  v the biased variance of the official standardized filter w_hat; then StdConv2d(w') = w_hat.
* ``gnrepro``: this project's own ``last.pt`` (the run's ``data.mean/std`` is its input convention).

The input convention is folded into conv1 so that evaluation uses the suite's one transform,
x = (rgb01 - data.mean) / data.std. Exact: the channel order (BGR -> RGB) and every per-channel
scale (0-255, a std) become conv1 weights. The mean is not folded: conv1 has no bias and zero
padding, so a mean shift is not a constant at the image border, and under GN a per-channel constant
would not even cancel. Instead the file's mean is the one the transform must subtract
(``InputConvention.rgb_mean01``): ``gnrepro.evaluate`` sets ``data.mean`` to it, which makes the
converted model compute exactly the publisher's function; fine-tuning with another ``data.mean``
starts from a model whose input is offset by that difference (logged).
"""
from __future__ import annotations

import argparse
import importlib
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gnrepro.errors import ConfigError

FORMATS = ("caffe2", "torchvision", "ws_official", "gnrepro")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WS_OFFICIAL_EPS = 1e-5  # added to the unbiased std (joe-siyuan-qiao/WeightStandardization)


@dataclass(frozen=True)
class InputConvention:
    """The publisher's input: x[c] = (scale * rgb01[perm[c]] - mean[c]) / std[c], where perm is
    (2, 1, 0) for BGR files; mean and std are in the file's channel order, at ``scale``."""
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False

    @property
    def perm(self) -> tuple[int, int, int]:
        return (2, 1, 0) if self.bgr else (0, 1, 2)

    @property
    def rgb_mean01(self) -> list[float]:
        """The mean to subtract from an RGB [0, 1] image for the fold to be exact."""
        out = [0.0, 0.0, 0.0]
        for c, p in enumerate(self.perm):
            out[p] = self.mean[c] / self.scale
        return out


TORCH_INPUT = InputConvention(1.0, IMAGENET_MEAN, IMAGENET_STD)
CAFFE2_INPUT = InputConvention(255.0, (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0), bgr=True)


# ------------------------------------------------------------------------------------- Caffe2 pickles

def _latin1(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); allow only that.
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


def _numpy_core(name: str, where: str = "multiarray"):
    for module in (f"numpy._core.{where}", f"numpy.core.{where}"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {name}")


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and plain containers, and nothing else: any
    other global (a function, a class) is refused when the file names it, before it could run."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return _numpy_core(name)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _numpy_core(name, "numeric")  # protocol 5 pickles of arrays: bytes + dtype + shape
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict
            return OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_caffe2(path: Path) -> dict[str, np.ndarray]:
    """The blobs of a Caffe2 .pkl: name -> array, without the ``*_momentum`` solver state."""
    try:
        with open(path, "rb") as f:
            data = ArraysOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise ConfigError(f"refused to load {path}: {err} (a Caffe2 weight file holds only numpy arrays)") from None
    except Exception as err:  # truncated or not a pickle at all
        raise ConfigError(f"{path} is not a readable Caffe2 pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a dict of Caffe2 blobs")
    blobs = data["blobs"] if isinstance(data.get("blobs"), dict) else data
    out = {}
    for key, value in blobs.items():
        if str(key).endswith("_momentum"):
            continue
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise ConfigError(f"{path}: blob {key!r} is a {type(value).__name__}, not a numeric array")
        out[str(key)] = value
    return out


_BRANCH2 = {"1": "a", "2": "b", "3": "c"}
_NORM_SUFFIX = {"weight": "_gn_s", "bias": "_gn_b"}


def caffe2_name(key: str) -> str | None:
    """Detectron's blob name for one gnrepro/torchvision key of a GN ResNet (None: no such blob)."""
    parts = key.split(".")
    if key == "conv1.weight":
        return "conv1_w"
    if parts[0] == "bn1":
        return "conv1" + _NORM_SUFFIX[parts[1]] if parts[1] in _NORM_SUFFIX else None
    if parts[0] == "fc":
        return {"weight": "pred_w", "bias": "pred_b"}.get(parts[1])
    if not parts[0].startswith("layer"):
        return None
    prefix = f"res{int(parts[0][5:]) + 1}_{parts[1]}"
    if parts[2] == "downsample":
        branch, is_conv, field = prefix + "_branch1", parts[3] == "0", parts[4]
    else:
        branch, is_conv, field = prefix + "_branch2" + _BRANCH2[parts[2][-1]], parts[2].startswith("conv"), parts[3]
    if is_conv:
        return branch + "_w" if field == "weight" else None
    return branch + _NORM_SUFFIX[field] if field in _NORM_SUFFIX else None


def from_caffe2(blobs: dict[str, np.ndarray], target: dict[str, torch.Tensor], path: Path) -> tuple[dict, list]:
    """gnrepro state dict from Caffe2 blobs, for the keys of ``target``; also the blobs left unused."""
    if "res_conv1_bn_s" in blobs:
        raise ConfigError(f"{path} is a Caffe2 BN (AffineChannel) model in MSRA's layout (stride on the 1x1 "
                          "conv), not this ResNet; only Detectron's GN models (conv1_gn_s, ...) convert")
    state, used = {}, set()
    for key, ref in target.items():
        name = caffe2_name(key)
        if name in blobs:
            value = torch.from_numpy(np.ascontiguousarray(blobs[name]))
            if value.dim() != ref.dim() and value.numel() == ref.numel():
                value = value.reshape(ref.shape)  # e.g. an FC weight stored as (out, in, 1, 1)
            state[key] = value.to(ref.dtype)
            used.add(name)
    return state, sorted(set(blobs) - used)


# ------------------------------------------------------------------------------------- torch files

def read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors of a torch checkpoint (weights_only) or safetensors file, and the gnrepro run config
    when the file is a gnrepro ``last.pt``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path)), None
        except Exception as err:
            raise ConfigError(f"{path} is not a readable safetensors file ({err})") from None
    try:
        # timm's train.py saves its argparse.Namespace of settings beside the weights: a plain attribute
        # holder (built with object.__new__ and a __dict__ update), so allowing it runs no code
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch's message carries terminal bold codes
        lines = text.splitlines()
        # torch's first line says only that it failed; the line naming the refused global is the useful one
        named = [line.strip() for line in lines if "Unsupported global" in line or "is not allowed" in line]
        first = (named or lines or [type(err).__name__])[0]
        raise ConfigError(f"refused to load {path}: {first}") from None
    except Exception as err:
        raise ConfigError(f"{path} is not a readable torch weight file ({type(err).__name__}: {err})") from None
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict):
        config, obj = obj["config"], obj["model"]
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors = {}
    for key, value in obj.items():
        if torch.is_tensor(value):
            key = key[len("module."):] if key.startswith("module.") else key  # DataParallel
            tensors[re.sub(r"(^|\.)gn(\d)\.", r"\1bn\2.", key)] = value  # OpenMMLab names GN layers gnN
    return tensors, config


def ws_official_to_gnrepro(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """A conv weight w of the official WS convention -> w' with StdConv2d(w', eps) == official WS(w)."""
    flat = weight.double().flatten(1)
    centered = flat - flat.mean(1, keepdim=True)
    target = centered / (flat.std(1, keepdim=True) + WS_OFFICIAL_EPS)  # the official standardized filter
    var = target.var(1, unbiased=False, keepdim=True)  # < 1 always: n-1 over n, and the + eps
    scale = torch.sqrt(eps / (1.0 - var))
    return (scale * target).reshape(weight.shape).to(weight.dtype)


# ------------------------------------------------------------------------------------- input fold

def fold_input(conv1: torch.Tensor, source: InputConvention, std, ws: bool) -> torch.Tensor:
    """conv1's weight for inputs (rgb01 - mean) / ``std`` from one for the ``source`` convention.

    Exact for the channel order and every scale (see the module docstring for the mean). A WS conv
    standardizes its weight, so it can absorb a channel order but no scale: then ``std`` must be one
    that leaves every input channel's scale unchanged.
    """
    if conv1.shape[1] != 3:
        raise ConfigError(f"conv1 takes {conv1.shape[1]} input channels; released ImageNet models take 3 (RGB)")
    gains = [source.scale * std[p] / source.std[c] for c, p in enumerate(source.perm)]
    if all(g == 1.0 for g in gains) and not source.bgr:
        return conv1  # bitwise unchanged
    if ws and any(not math.isclose(g, 1.0, rel_tol=1e-6) for g in gains):
        raise ConfigError(f"a weight-standardized conv1 cannot absorb an input scale; set data.std={list(source.std)} "
                          f"(the file's std at scale {source.scale})")
    out = torch.empty_like(conv1)
    for c, p in enumerate(source.perm):
        out[:, p] = (conv1[:, c].double() * gains[c]).to(conv1.dtype)
    return out


def mean_offset(source: InputConvention, mean) -> float:
    """Largest per-channel offset, in the file's input units, between the publisher's input and the
    converted model's, when the transform subtracts ``mean`` instead of ``source.rgb_mean01``."""
    return max(abs(source.scale * mean[p] - source.mean[c]) / source.std[c] for c, p in enumerate(source.perm))
