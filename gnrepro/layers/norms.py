"""The paper's normalization methods, their constants and GN's groups (Wu & He, "Group Normalization", Sec. 3).

The paper casts every method as x_hat = (x - mu) / sqrt(var + eps) over a set S_i, followed by a
per-channel affine gamma/beta (Sec. 3.1). The methods differ only in S_i:

- ``bn``: (N, H, W) per channel, statistics of the images on one *worker* (Sec. 4.1, footnote 2).
- ``gn``: (C/G, H, W) per sample, G groups of consecutive channels (Eq. 7).
- ``ln``: GN with G = 1 (Sec. 3.1, "LN ... is a special case of GN").
- ``in``: GN with one channel per group (G = C).

``brn`` is Batch Renorm on BN's per-worker statistics (gnrepro.layers.batch_renorm, Sec. 4.1); ``none`` is no
layer at all (VGG-16 without normalization, Sec. 4.1).

This module holds the paper's constants and GN's group arithmetic. The layers are torch's own
kernels (``F.batch_norm`` / ``F.group_norm``): per-worker BN in gnrepro.layers.per_worker_bn, Batch Renorm
in gnrepro.layers.batch_renorm; which name builds which layer is gnrepro.layers.norm_registry's table.
"""
from __future__ import annotations

from gnrepro.errors import ConfigError, check_positive_int

EPS = 1e-5  # the paper's epsilon for every normalization
DEFAULT_GROUPS = 32  # the paper's G when neither norm.groups nor norm.channels_per_group is set


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def num_groups(num_channels: int, groups: int | None = None, channels_per_group: int | None = None) -> int:
    """Resolve GN's group count for a layer of ``num_channels`` channels (paper Table 3, top/bottom).

    Exactly one of ``groups`` (fixed G for every layer) or ``channels_per_group`` (fixed C/G, so G
    varies with the layer width) may be given; with neither, the paper's default G = 32 applies.
    """
    if groups is not None and channels_per_group is not None:
        raise ConfigError(
            f"GN got both groups={groups} and channels_per_group={channels_per_group}; "
            "set exactly one of norm.groups or norm.channels_per_group (the other to null)"
        )
    if channels_per_group is not None:
        check_positive_int("norm.channels_per_group", channels_per_group)
        if num_channels % channels_per_group:
            raise ConfigError(
                f"GN with channels_per_group={channels_per_group} cannot split a layer of {num_channels} "
                f"channels; valid norm.channels_per_group for it: {_divisors(num_channels)}"
            )
        return num_channels // channels_per_group
    g = DEFAULT_GROUPS if groups is None else groups
    check_positive_int("norm.groups", g)
    if num_channels % g:
        raise ConfigError(
            f"GN with groups={g} cannot split a layer of {num_channels} channels (G must divide C); "
            f"valid norm.groups for it: {_divisors(num_channels)}"
        )
    return g
