"""Checks of the command line that must happen before Hydra creates a run folder: unknown
config-group choices, an unusable results folder, and then every job's composed config against the
schema (all jobs of a ``-m`` sweep before the first one trains), each as one line."""
from __future__ import annotations

import copy
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from gnrepro.errors import ConfigError, FolderInUse, UserError
from gnrepro.resources import CONFIGS

# Hydra flags that take a value, which must not be read as an override.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Hydra flags after which no job of ours runs, or runs from another config: nothing to check here.
NOT_OUR_JOBS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
                "--version", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                "--experimental-rerun", "--resolve", "-p", "--package"}


def _not_our_job(argv: list[str]) -> bool:
    """Hydra prints something (help, the config) or runs another config instead of our job."""
    return any(a in NOT_OUR_JOBS or a.split("=")[0] in NOT_OUR_JOBS for a in argv)


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


def check_writable(results_dir: str, key: str = "results_dir") -> None:
    """Raise ConfigError unless run folders can be created under ``results_dir`` (``key``: how the
    message names it: results_dir, or a job's run folder from hydra.run.dir)."""
    name = f"{key}={results_dir!r}" if key == "results_dir" else f"{key} {results_dir}"
    existing = Path(results_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{name} cannot be created: {existing} is a file; choose another results_dir")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(f"{name} is not writable ({err.strerror} in {existing}); "
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


def _configs_signature(configs: Path) -> tuple:
    """What the composed config depends on besides the command line: the files under ``configs`` (name,
    size, modification time) and the working directory (Hydra records it in ``hydra.runtime``)."""
    files = sorted(configs.rglob("*.yaml"))
    return (os.getcwd(), *((str(f), *(lambda st: (st.st_size, st.st_mtime_ns))(f.stat())) for f in files))


# One launch composes each job's command line more than once (the sweep listing, every job's checks
# before anything is written, then plan or the trainer), ~0.1 s each: a 30-job sweep's plan composed
# 62 times. Keyed by everything the result depends on; each caller gets its own copy to change.
_COMPOSED: dict[tuple, object] = {}


def compose_config(overrides: list[str], configs: Path = CONFIGS, config_name: str = "train"):
    """The config ``config_name`` (train or evaluate) Hydra composes for ``overrides`` (with its
    ``hydra`` node), or one line."""
    key = (tuple(overrides), str(configs), config_name, _configs_signature(Path(configs)))
    if key not in _COMPOSED:
        if len(_COMPOSED) >= 512:
            _COMPOSED.clear()
        _COMPOSED[key] = _compose(list(overrides), configs, config_name)
    return copy.deepcopy(_COMPOSED[key])


def _compose(overrides: list[str], configs: Path, config_name: str):
    from gnrepro.settings.schema import COMMANDS, unknown_key

    try:
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err)
        key = re.match(r"Could not override '([^']+)'", text)
        if key:
            raise ConfigError(unknown_key(key.group(1), COMMANDS[config_name])) from None
        sweep = re.match(r"Ambiguous value for argument '([^']+)'", text)
        if sweep:
            raise ConfigError(f"{sweep.group(1)} is a sweep: add -m to run one job per value, "
                              f"or write a list as key=[a,b]") from None
        raise ConfigError(" ".join(line.strip() for line in text.splitlines() if line.strip())) from None


def sweep_jobs(overrides: list[str], configs: Path = CONFIGS) -> list[list[str]]:
    """The job list Hydra's basic sweeper would launch for ``-m <overrides>``: the preset's
    ``hydra.sweeper.params`` first, the command line after them (so the command line wins)."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(" ".join(str(err).split())) from None
    # Compose without sweeps to read the preset's sweeper params (sweep values cannot compose).
    plain = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    cfg = compose_config(plain, configs)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    return expand(parser.parse_overrides(params + list(overrides)))


def expand(overrides: list) -> list[list[str]]:
    """Every job of a sweep, in the order Hydra's basic sweeper launches them: the cartesian product of
    each override's values (``a=1,2 b=x,y`` -> a=1 b=x, a=1 b=y, a=2 b=x, a=2 b=y), a key given twice
    taking its last values in its first place (a preset's sweep, then the command line's), built on the
    public ``Override`` API so that it does not break with Hydra's internals."""
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:  # interval(0,1): a sweeper plugin's (Optuna, Nevergrad) search space, not a list of runs
            raise ConfigError(f"{key}={override.input_line.split('=', 1)[1] if override.input_line else '...'} is a "
                              "search interval, which the basic sweeper cannot list; give the values, e.g. key=a,b,c")
    return [list(job) for job in itertools.product(*values.values())]


def job_config(job: list[str], multirun: bool, configs: Path = CONFIGS):
    """(config without its ``hydra`` node, the chosen file of each group, the job's run folder)."""
    cfg = compose_config(job, configs)
    hydra_cfg = cfg.hydra
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    try:
        folder = Path(hydra_cfg.sweep.dir) / hydra_cfg.sweep.subdir if multirun else Path(hydra_cfg.run.dir)
    except (OmegaConfBaseException, UserError):
        folder = None  # a value the run name cannot be made of; the schema names it
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices, folder


def check_composes(argv: list[str], config_name: str, configs: Path = CONFIGS) -> None:
    """One line (ConfigError) if the command line ``argv`` of a one-job command (evaluate) does not
    compose with ``config_name``, before Hydra creates anything."""
    if _not_our_job(argv):
        return
    compose_config(_overrides(argv), configs, config_name)


def check_jobs(argv: list[str], configs: Path = CONFIGS, locks: bool = True, hold: bool = False) -> list[str]:
    """Compose and validate every job the command line would run, before Hydra creates any folder.

    A sweep's error names the job (its overrides). Raises ConfigError (with ``debug`` set when the
    job asked for tracebacks); returns the notes of the first job. ``locks``: also refuse a job whose
    folder another process is training. ``hold`` (with ``locks``): once every job is valid, lock
    every job's folder for this process (gnrepro.runfiles.RunLock.hold) before Hydra writes into
    any; if one is refused, the locks taken so far are released and the folders they created removed.
    """
    from gnrepro.settings.validate import validate
    from gnrepro.runs.resume import check_settings
    from gnrepro.runfiles import DamagedFile, RunLock, check_folder, running_pid

    if _not_our_job(argv):
        return []
    overrides = _overrides(argv)
    multirun = "-m" in argv or "--multirun" in argv
    jobs = sweep_jobs(overrides, configs) if multirun else [overrides]
    notes: Optional[list[str]] = None
    folders: list[Optional[Path]] = []
    for number, job in enumerate(jobs, 1):
        where = f"job {number} of {len(jobs)} ({' '.join(job) or 'defaults'}): " if multirun else ""
        cfg = None
        try:
            cfg, choices, folder = job_config(job, multirun, configs)
            job_notes = validate(cfg, choices)
            pid = running_pid(folder) if folder is not None and locks else None
            if pid is not None:
                raise FolderInUse(f"{folder} is already running (pid {pid}); wait for it to finish or stop it")
            try:
                if folder is not None:  # a folder made with other settings stops the sweep now, not at this job
                    check_folder(folder)  # a file or a symlink where the run folder goes
                    check_settings(folder, OmegaConf.to_container(cfg, resolve=True))
            except DamagedFile:
                if locks:  # the trainer refuses it; plan (locks=False) lists the folder as damaged instead
                    raise
            if folder is not None and locks:
                check_writable(str(folder), key="the run folder")  # hydra.run.dir on a read-only place
        except UserError as err:
            if where:
                err = ConfigError(where + str(err))
            err.debug = cfg is not None and cfg.get("debug") is True
            raise err from None
        notes = job_notes if notes is None else notes
        folders.append(folder)
    if locks and hold:
        _hold_all(sorted({f for f in folders if f is not None}), RunLock)  # one order: two sweeps never deadlock
    return notes or []


def _hold_all(folders: list[Path], lock_type) -> None:
    """Lock every folder (issue 24, item 1); on a refusal, release the others and remove what this
    process created for them (only their lock: nothing else was written yet)."""
    held = []
    try:
        for folder in folders:
            held.append(lock_type(folder).hold())
    except BaseException:
        for lock in held:
            if lock.created:
                lock.discard()
            lock.release()
        raise
