import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import gnrepro.config  # noqa: F401  (registers the run_name resolver)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "gnrepro" / "configs"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def compose_cfg():
    """Compose the training config the way ``python -m gnrepro.train`` does, with overrides."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m gnrepro.train`` in a fresh directory (not the repo root)."""

    def _run(*overrides: str, cwd: Path | None = None, timeout: int = 600):
        env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
        return subprocess.run(
            [sys.executable, "-m", "gnrepro.train", *overrides],
            cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )

    return _run
