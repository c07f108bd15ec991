import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import gnrepro.settings.validate  # noqa: F401  (registers the run_name resolver)
from gnrepro.resources import CONFIGS

# The configs every test composes from: the package's own (configs), as the trainer finds them.

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_train(*overrides: str, hydra: bool = False):
    """The training config composed the way ``python -m gnrepro.train`` does, with overrides
    (``hydra``: with the ``hydra`` node, e.g. the run folder)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def data_config(name: str, root="/unused"):
    """The shipped ``data=<name>`` config, composed (with the keys it inherits from data_base/), writable."""
    overrides = [f"data={name}"] + ([] if name == "digits" else [f"data.root={root}"])
    cfg = compose_train(*overrides).data
    OmegaConf.set_struct(cfg, False)
    return cfg


@pytest.fixture
def configs_dir() -> Path:
    """configs, the folder every test composes from."""
    return CONFIGS


@pytest.fixture
def compose_cfg():
    """Compose the training config the way ``python -m gnrepro.train`` does, with overrides."""
    return compose_train


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
