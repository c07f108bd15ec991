"""What an earlier launch of the same run left behind, and whether it may be continued.

A run folder is named by the settings, so relaunching a command finds its folder again. Its saved
config must agree with the new one on every setting that changes results; keys that only change
how the run executes (device, progress bar, loader processes, where the data lives) may differ.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gnrepro import runfiles
from gnrepro.errors import ConfigError
from gnrepro.norms import DEFAULT_GROUPS

log = logging.getLogger("gnrepro")

# Settings that may change between launches of one run without changing its result.
RUNTIME_KEYS = (
    "progress", "device", "eval_batch", "debug", "results_dir", "checkpoint_steps", "logger",
    "data.num_workers", "data.root", "data.download", "data.pin_memory", "data.persistent_workers",
    "data.prefetch_factor", "probe",
)
# Keys added after runs were made, with the value that reproduces the runs made before them: a saved
# config without the key is the same setting as one with this value.
ADDED_KEYS = {"norm.eval_stats": "running", "norm.precise_batches": 100, "norm.frozen": False,
              "init": None, "init_format": "auto", "data.augment_val": 0}


@dataclass
class RunState:
    summary: Optional[dict] = None  # a finished (complete or failed) run's summary
    checkpoint: Optional[dict] = None  # the checkpoint to resume from


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _canonical(flat: dict) -> dict:
    """Settings that mean the same written the same way: GN with neither ``groups`` nor
    ``channels_per_group`` is G = 32, the run folder ``gn32`` either way (Table 3's G = 32 run is
    Figure 1's GN run)."""
    if flat.get("norm.name") == "gn" and flat.get("norm.groups") is None and flat.get("norm.channels_per_group") is None:
        flat = {**flat, "norm.groups": DEFAULT_GROUPS}
    return flat


def settings_diff(old: dict, new: dict) -> list[str]:
    """``key (old -> new)`` for every result-changing setting that differs."""
    a, b = _canonical(_flatten(old)), _canonical(_flatten(new))
    runtime = lambda k: any(k == r or k.startswith(r + ".") for r in RUNTIME_KEYS)  # noqa: E731
    old_value = lambda k: a.get(k, ADDED_KEYS.get(k, "unset"))  # noqa: E731
    new_value = lambda k: b.get(k, ADDED_KEYS.get(k, "unset"))  # noqa: E731
    return [f"{k} ({old_value(k)!r} -> {new_value(k)!r})"
            for k in sorted(set(a) | set(b)) if not runtime(k) and old_value(k) != new_value(k)]


def read_summary(run_dir: Path) -> Optional[dict]:
    """The run's summary if it is finished (complete or failed), None if there is none or it is not
    finished; DamagedFile (one line, with the fix) if it cannot be read."""
    path = Path(run_dir) / runfiles.SUMMARY
    if not path.is_file():
        return None
    summary = runfiles.read_summary_file(path)
    return summary if summary.get("status") in ("complete", "failed") else None


def check_settings(run_dir: Path, config: dict) -> None:
    """ConfigError if ``run_dir`` holds a run made with other result-changing settings than ``config``."""
    saved = Path(run_dir) / runfiles.CONFIG
    if saved.exists():
        diff = settings_diff(runfiles.read_config(saved), config)
        if diff:
            raise ConfigError(f"{run_dir} holds a run with other settings: {'; '.join(diff)}; "
                              f"use another results_dir or delete that folder")


def previous_state(run_dir: Path, config: dict) -> RunState:
    """Check ``run_dir`` against ``config`` and return what can be reused from it."""
    run_dir = Path(run_dir)
    check_settings(run_dir, config)
    summary = read_summary(run_dir)
    if summary is not None:
        return RunState(summary=summary)
    ckpt_path = run_dir / runfiles.CHECKPOINT
    if not ckpt_path.exists():
        return RunState()
    ckpt = runfiles.load_checkpoint(ckpt_path)
    diff = settings_diff(ckpt["config"], config)
    if diff:  # e.g. another run's last.pt copied here
        raise runfiles.DamagedFile(ckpt_path, f"a checkpoint of a run with other settings: {'; '.join(diff[:3])}")
    return RunState(checkpoint=ckpt)
