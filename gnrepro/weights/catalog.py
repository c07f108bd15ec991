"""Released ImageNet models for this project's ResNet-50/101 (torchvision layout: stride on the 3x3).

Each entry names the file, its format (how ``gnrepro.weights.formats`` reads it), the checksum where
its publisher gives one, the model/norm/conv config it needs, and the published top-1 error with its
source. Published numbers are the publisher's single center crop (paper Sec. 4.1: shorter side 256,
center 224) unless ``eval_note`` says otherwise. None of these files was downloaded by this project
(no network where it was built): the converters are checked on synthetic files in each format only.

``released(model, norm, conv)`` is also the OmegaConf resolver ``released`` that the
``pets_transfer`` preset uses to give each norm its own released model.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from gnrepro.errors import ConfigError
from gnrepro.layers.norm_registry import preset


@dataclass(frozen=True)
class Released:
    name: str
    url: str
    format: str                 # caffe2 | torchvision | ws_official (see gnrepro.weights.formats)
    model: str                  # resnet50 | resnet101
    norm: str                   # the norm= choice it needs (bn | gn | gn_ws)
    top1_err: float | None      # published top-1 error (%), single center crop; None = not in this column
    top5_err: float | None
    source: str                 # where the number and the file are published
    sha256_prefix: str | None = None  # the hex digits embedded in the file name (torch.hub convention)
    eval_note: str = ""         # how the publisher's evaluation differs from the paper's 256/224 crop

    @property
    def norm_name(self) -> str:
        return preset(self.norm)[0]["name"]

    @property
    def conv(self) -> str:
        return preset(self.norm)[1]

    def overrides(self) -> list[str]:
        """Command-line choices that build the model this file needs."""
        return [f"model={self.model}", f"norm={self.norm}"]


DETECTRON_GN = "Detectron projects/GN/README.md (the GN paper's authors' Caffe2 models, G=32)"
WS_REPO = ("Weight Standardization authors, joe-siyuan-qiao/pytorch-classification README; file: OpenMMLab's "
           "mirror of it (mmcv open-mmlab://jhu/...)")
TORCHVISION = "torchvision ResNet50/101_Weights.IMAGENET1K_V1 docs (acc@1 76.130 / 77.374, acc@5 92.862 / 93.546)"

CATALOG: dict[str, Released] = {r.name: r for r in [
    Released("R-50-GN", "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47261647/R-50-GN.pkl",
             "caffe2", "resnet50", "gn", 24.0, None, DETECTRON_GN),
    Released("R-101-GN", "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47592356/R-101-GN.pkl",
             "caffe2", "resnet101", "gn", 22.6, None, DETECTRON_GN),
    Released("R-50-GN-WS", "https://download.openmmlab.com/pretrain/third_party/resnet50_gn_ws-15beedd8.pth",
             "ws_official", "resnet50", "gn_ws", 23.72, 6.99, WS_REPO, sha256_prefix="15beedd8"),
    Released("R-101-GN-WS", "https://download.openmmlab.com/pretrain/third_party/resnet101_gn_ws-3e3c308c.pth",
             "ws_official", "resnet101", "gn_ws", 22.10, 6.07, WS_REPO, sha256_prefix="3e3c308c"),
    Released("tv-resnet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
             "torchvision", "resnet50", "bn", 23.870, 7.138, TORCHVISION, sha256_prefix="0676ba61"),
    Released("tv-resnet101", "https://download.pytorch.org/models/resnet101-63fe2227.pth",
             "torchvision", "resnet101", "bn", 22.626, 6.454, TORCHVISION, sha256_prefix="63fe2227"),
    Released("timm-resnet50_gn", "https://huggingface.co/timm/resnet50_gn.a1h_in1k/resolve/main/model.safetensors",
             "torchvision", "resnet50", "gn", None, None, "timm resnet50_gn.a1h_in1k (Hugging Face hub)",
             eval_note="timm evaluates it at its own settings (bicubic resize, crop_pct 0.94); no number at "
                       "the paper's 256/224 bilinear crop is published, so this row only reports what gnrepro measures"),
]}

# Which released model each (model, norm, conv) starts from in the transfer preset.
_FOR_SETTING = {(r.model, r.norm_name, r.conv): r.name
                for r in CATALOG.values() if not r.name.startswith("timm")}


def lookup(name: str) -> Released | None:
    return CATALOG.get(name)


def released(model: str, norm: str, conv: str) -> str:
    """The catalogue's model for a setting, e.g. (resnet50, gn, ws) -> R-50-GN-WS."""
    try:
        return _FOR_SETTING[(model, norm, conv)]
    except KeyError:
        choices = ", ".join(f"{m} {n} {c}" for m, n, c in sorted(_FOR_SETTING))
        raise ConfigError(f"no released model for model={model} norm={norm} conv={conv}; "
                          f"released ones: {choices}") from None


if not OmegaConf.has_resolver("released"):
    OmegaConf.register_new_resolver("released", released)
