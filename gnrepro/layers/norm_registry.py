"""The one table of normalization choices (``norm.name``), and everything derived from a choice:
the layer (``build_norm``), the run-folder tag (``norm_tag``) and the label of tables and figures
(``norm_label``). Every other module asks this table what a norm is (does it use batch statistics,
does it take groups, does it build a layer) instead of testing its name.

The methods are the paper's (Wu & He, "Group Normalization", Sec. 3 and 4.1): BN per worker, GN,
LN = GN with G = 1, IN = GN with G = C, Batch Renorm, and no normalization (VGG-16 only).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from gnrepro.layers.batch_renorm import PerWorkerBatchRenorm2d
from gnrepro.errors import ConfigError
from gnrepro.layers.norms import DEFAULT_GROUPS, EPS, GroupNorm, num_groups
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d
from gnrepro.layers.precise_bn import uses_precise

GROUP_OPTIONS = ("groups", "channels_per_group")
RENORM_OPTIONS = ("r_max", "d_max", "relax_start", "relax_steps")


@dataclass(frozen=True)
class NormKind:
    """What one ``norm.name`` is."""
    label: str                    # in tables and figures (variants: see norm_label)
    build: Callable               # (num_channels, eps, **options) -> layer, or None for no layer
    batch_stats: bool = False     # statistics over a worker's images: per-worker split, precise BN, sync
    options: tuple[str, ...] = ()  # layer options beyond eps (and workers, for batch_stats norms)
    grouped: bool = False         # takes norm.groups / norm.channels_per_group (Table 3)
    layer: bool = True            # False: no layer at all (VGG-16 without normalization)


def _bn(num_channels: int, eps: float, workers: int = 1, sync: bool = False, frozen: bool = False) -> nn.Module:
    if frozen:
        if sync:
            raise ConfigError("norm.frozen=true and norm.sync=true exclude each other: frozen BN has no batch statistics")
        return FrozenBatchNorm2d(num_channels, eps=eps)
    if sync:
        return nn.SyncBatchNorm(num_channels, eps=eps)
    return PerWorkerBatchNorm2d(num_channels, workers=workers, eps=eps)


def _brn(num_channels: int, eps: float, workers: int = 1, **renorm) -> nn.Module:
    return PerWorkerBatchRenorm2d(num_channels, workers=workers, eps=eps, **renorm)


def _gn(num_channels: int, eps: float, groups: int | None = None, channels_per_group: int | None = None) -> nn.Module:
    return GroupNorm(num_channels, num_groups(num_channels, groups, channels_per_group), eps=eps)


# The table, in the order error messages list the choices.
NORM_KINDS: dict[str, NormKind] = {
    "bn": NormKind("BN", _bn, batch_stats=True, options=("sync", "frozen")),
    "brn": NormKind("BRN", _brn, batch_stats=True, options=RENORM_OPTIONS),
    "gn": NormKind("GN", _gn, options=GROUP_OPTIONS, grouped=True),
    "ln": NormKind("LN", lambda c, eps: GroupNorm(c, 1, eps=eps)),
    "in": NormKind("IN", lambda c, eps: GroupNorm(c, c, eps=eps)),
    "none": NormKind("no norm", lambda c, eps: None, layer=False),
}
NORMS = tuple(NORM_KINDS)
# BN's variants: their own tag and label (the option is accepted by the kind listing it).
VARIANTS = {"sync": ("syncbn", "SyncBN"), "frozen": ("frozenbn", "BN* (frozen)")}
# The norm= config files (configs/norm/) that set more than norm.name: the norm settings and
# the conv they select (tested against the files). The other files are a norm.name each.
PRESETS = {"gn_ws": ({"name": "gn"}, "ws"), "bn_ws": ({"name": "bn"}, "ws"),
           "frozen_bn": ({"name": "bn", "frozen": True}, "plain")}


def preset(choice: str) -> tuple[dict, str]:
    """(norm settings, conv name) that ``norm=<choice>`` selects, e.g. gn_ws -> ({name: gn}, ws)."""
    return PRESETS.get(choice, ({"name": choice}, "plain"))


def kind(name: str) -> NormKind:
    if name not in NORM_KINDS:
        raise ConfigError(f"unknown norm {name!r}; choose one of: {', '.join(NORMS)}")
    return NORM_KINDS[name]


def _owner(option: str) -> str | None:
    """The norm whose own option ``option`` is (None: no norm's)."""
    return next((n for n, k in NORM_KINDS.items() if option in k.options), None)


def build_norm(name: str, num_channels: int, *, eps: float = EPS, workers: int = 1, **options) -> nn.Module | None:
    """Build the normalization layer ``name`` for a layer with ``num_channels`` channels.

    ``options`` are the kind's own (``groups``/``channels_per_group`` for ``gn``, ``sync``/``frozen``
    for ``bn``, the renorm limits for ``brn``); ``workers`` applies to batch-statistics norms only.
    Every layer has a per-channel affine gamma/beta, initialised to 1/0. ``none`` builds no layer
    (returns None). ``frozen`` is the paper's BN* for transfer (Sec. 5): torchvision's
    FrozenBatchNorm2d with the pretrained running statistics.
    """
    norm = kind(name)
    given = [k for k, v in options.items() if v is not None and v is not False]  # unset = not given
    foreign = [k for k in given if k not in norm.options]
    other = [k for k in foreign if k not in GROUP_OPTIONS and k not in VARIANTS]
    if other:
        owner = _owner(other[0])
        raise ConfigError(f"norm {name!r} has no {', '.join(sorted(other))}"
                          + (f"; those apply to norm={owner} only" if owner else ""))
    for option in foreign:  # a BN variant or GN's groups on another norm
        owner = _owner(option)
        if option in VARIANTS:
            raise ConfigError(f"norm.{option} applies to norm={owner} only, not {name!r}")
        raise ConfigError(f"norm {name!r} has no groups; norm.groups / norm.channels_per_group apply to norm={owner} only")
    layer_options = {k: v for k, v in options.items() if k in norm.options}
    if norm.batch_stats:
        layer_options["workers"] = workers
    return norm.build(num_channels, eps, **layer_options)


def norm_tag(norm, conv) -> str:
    """Short label of the normalization choice, e.g. ``bn``, ``syncbn``, ``frozenbn``, ``gn32``,
    ``gn_c16``, ``gn32-ws``, ``bn-precise``: ``<base>[-precise][-ws]``, the run folder's first part."""
    name = norm.get("name", "?")
    variant = next((v for v in VARIANTS if NORM_KINDS.get(name) and v in NORM_KINDS[name].options and norm.get(v)), None)
    if variant:
        tag = VARIANTS[variant][0]
    elif name in NORM_KINDS and NORM_KINDS[name].grouped:
        cpg = norm.get("channels_per_group")
        tag = f"{name}_c{cpg}" if cpg is not None else f"{name}{norm.get('groups') or DEFAULT_GROUPS}"
    else:
        tag = name
    if uses_precise(norm):
        tag += "-precise"
    return tag + ("-ws" if conv.get("name") == "ws" else "")


def norm_label(tag: str) -> str:
    """The display label of a run's norm tag (as ``norm_tag`` writes it): BN, GN (any G or C/G),
    GN+WS, SyncBN, BN* (frozen), "BN, precise stats", "no norm"; an unknown tag is shown as is."""
    base, *suffixes = tag.split("-")
    label = {v[0]: v[1] for v in VARIANTS.values()}.get(base)
    if label is None:
        grouped = [n for n, k in NORM_KINDS.items() if k.grouped and base.startswith(n)
                   and (base[len(n):].isdigit() or base[len(n):].startswith("_c"))]
        name = grouped[0] if grouped else base
        if name not in NORM_KINDS:
            return tag
        label = NORM_KINDS[name].label
    for suffix in suffixes:
        if suffix == "ws":
            label += "+WS"
        elif suffix == "precise":
            label += ", precise stats"
        else:
            return tag
    return label
