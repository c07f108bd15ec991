"""Where the files the commands read at run time live: the Hydra configs and the paper's published
numbers. Both ship inside the wheel (package data), so every path here comes from the installed
package through ``importlib.resources``, never from a checkout beside it.

The one exception is a plain checkout that was never installed (``python -m gnrepro.train`` run from
the repository root): ``gnrepro.configs`` is then not importable, because the configs folder sits at
the top of the checkout and only the installer maps it into the package, so it is found beside the
package instead."""
from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path


def _config_dir() -> Path:
    if importlib.util.find_spec("gnrepro.configs") is not None:  # editable or wheel install
        return Path(str(importlib.resources.files("gnrepro.configs")))
    checkout = Path(str(importlib.resources.files("gnrepro"))).parent / "configs"  # plain checkout
    if not (checkout / "train.yaml").is_file():
        raise ImportError(f"gnrepro: the Hydra configs are missing (looked for gnrepro.configs and {checkout}); "
                          "reinstall with: pip install -e . (checkout) or pip install gnrepro")
    return checkout


# The composable configs (train.yaml, evaluate.yaml and their groups), as a folder Hydra can search.
CONFIGS: Path = _config_dir()
# Every number the paper publishes (Sec. 4, Tables 1-4, Fig. 1/5/6), which `report` sets beside ours.
PUBLISHED: Path = Path(str(importlib.resources.files("gnrepro") / "paper" / "published_results.csv"))
