"""Checks of the command line that must happen before Hydra composes a config or creates a run
folder: unknown config-group choices and an unusable results folder, each as one line."""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from gnrepro.norms import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Hydra flags that take a value, which must not be read as an override.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _overrides(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def check_writable(results_dir: str) -> None:
    """Raise ConfigError unless run folders can be created under ``results_dir``."""
    existing = Path(results_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"results_dir={results_dir!r} cannot be created: {existing} is a file; "
                          "choose another results_dir")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(f"results_dir={results_dir!r} is not writable ({err.strerror} in {existing}); "
                          "choose a writable results_dir") from None


def check_command_line(argv: list[str], configs: Path = CONFIGS) -> None:
    try:
        overrides = OverridesParser.create().parse_overrides(_overrides(argv))
    except Exception:  # a syntax error: Hydra reports it with its own message
        return
    results_dir = yaml.safe_load((configs / "train.yaml").read_text())["results_dir"]
    for o in overrides:
        key = o.key_or_group
        if o.is_delete() or o.package is not None:
            continue
        if key == "results_dir" and not o.is_sweep_override():
            results_dir = o.get_value_element_as_str()
        group = configs / key
        if "/" in key or not group.is_dir():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices = sorted(p.stem for p in group.glob("*.yaml"))
        for value in values:
            if value not in choices and value != "null":
                raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(choices)}")
    if "${" not in str(results_dir):
        check_writable(results_dir)
