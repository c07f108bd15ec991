"""What an earlier launch of the same run left behind, and whether it may be continued.

A run folder is named by the settings, so relaunching a command finds its folder again. Its saved
config must agree with the new one on every setting that changes results; keys that only change
how the run executes (device, progress bar, loader processes, where the data lives) may differ
(gnrepro.runs.identity says which is which).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gnrepro import runfiles
from gnrepro.errors import ConfigError
from gnrepro.runs.identity import settings_diff

log = logging.getLogger("gnrepro")


@dataclass
class RunState:
    summary: Optional[dict] = None  # a finished (complete or failed) run's summary
    checkpoint: Optional[dict] = None  # the checkpoint to resume from


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
    summary = runfiles.read_summary(run_dir)
    if summary is not None:
        return RunState(summary=summary)
    if os.path.lexists(run_dir / runfiles.METRICS):  # never trained over: plan and report call it damaged too
        runfiles.read_jsonl(run_dir / runfiles.METRICS)
    ckpt_path = run_dir / runfiles.CHECKPOINT
    if not ckpt_path.exists():
        return RunState()
    ckpt = runfiles.load_checkpoint(ckpt_path)
    diff = settings_diff(ckpt["config"], config)
    if diff:  # e.g. another run's last.pt copied here
        raise runfiles.DamagedFile(ckpt_path, f"a checkpoint of a run with other settings: {'; '.join(diff[:3])}")
    return RunState(checkpoint=ckpt)
