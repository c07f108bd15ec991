"""What a run leaves on disk, written so that a kill at any moment leaves either the old or the
new version of each file (temp file in the same folder, then an atomic rename), and read back so
that a damaged or foreign file is named in one line with its fix, never a traceback.

A run folder's status has one vocabulary, ``run_status``, that plan, report and resume all read.

JSON is strict (RFC 8259): a non-finite number is written as null, and a file holding NaN or
Infinity is damaged. A run folder is locked (``flock`` on ``.lock``) while a process trains it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import yaml

from gnrepro.errors import ConfigError, FolderInUse, UserError

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "last.pt"
LOCK = ".lock"  # flock'ed by the process training the folder; holds its pid
FIXES = {  # what to do about a damaged file, by name
    CONFIG: "delete the run folder to start the run again",
    METRICS: "delete the run folder to start the run again",
    SUMMARY: "delete it to resume the run from last.pt",
    CHECKPOINT: "delete it to restart the run from scratch",
}

# The status of a run folder: the one vocabulary of plan, report (gnrepro.runs.results) and resume.
COMPLETE = "complete"  # finished: summary.json holds the result
FAILED = "failed"      # finished: summary.json says why (non-finite loss or weights)
PARTIAL = "partial"    # epochs recorded (metrics.jsonl) but no summary: interrupted, or still running
PENDING = "pending"    # nothing trained yet (at most the config)
DAMAGED = "damaged"    # a run file does not parse; RunStatus.reason names it
FINISHED = (COMPLETE, FAILED)  # what summary.json may say: the run is never trained again


class DamagedFile(UserError):
    """A run file that does not parse or does not hold what the run wrote."""

    def __init__(self, path: Path, reason: str, fix: Optional[str] = None):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} is damaged ({reason}); {fix or FIXES.get(self.path.name, 'delete it')}")


# ---------------------------------------------------------------------------------------- writing

def _file_mode() -> int:
    """The mode open() would give a new file under the current umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete temp files of writes that a kill interrupted (only while holding the run's lock)."""
    names = (CONFIG, METRICS, SUMMARY, CHECKPOINT)
    leftovers = [p for name in names for p in Path(run_dir).glob(f".{name}.*.tmp")]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def finite(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _dumps(obj, **kwargs) -> str:
    return json.dumps(finite(obj), allow_nan=False, sort_keys=True, **kwargs)


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, _dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(_dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict) -> None:
    """Add one strict-JSON line to ``path``; earlier lines stay (a line torn by a kill is the last one)."""
    with open(path, "a") as f:
        f.write(_dumps(row) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


# ---------------------------------------------------------------------------------------- reading
#
# Every file read back is parsed defensively (issue 24, item 2): read from a regular file only (a
# FIFO, device or directory in its place is damaged, never waited on), bounded in size, nesting and
# YAML aliases, every number finite (``1e999`` parses to inf and is refused like NaN), and the type
# of every key the suite reads checked. What fails is a ``DamagedFile``: one line naming the file and
# the fix for the trainer, a "damaged (<file>: <reason>)" status for plan and report.

MAX_BYTES = {CONFIG: 1 << 20, SUMMARY: 4 << 20, METRICS: 64 << 20}  # far above what a run writes
MAX_BYTES_OTHER = 256 << 20  # probe.jsonl and other JSON lines
MAX_DEPTH = 32               # our files nest 4 levels at most
MAX_ALIASES = 100            # OmegaConf never writes YAML aliases; a few hand-written ones are fine


def _read_text(path: Path, limit: Optional[int] = None) -> str:
    """The text of the regular file ``path``, at most ``limit`` bytes; DamagedFile otherwise."""
    path = Path(path)
    limit = limit or MAX_BYTES.get(path.name, MAX_BYTES_OTHER)
    try:  # O_NONBLOCK: opening a FIFO put in a file's place must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise DamagedFile(path, f"cannot be read: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise DamagedFile(path, f"{kind}, not a file the run wrote")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise DamagedFile(path, f"cannot be read: {err.strerror or type(err).__name__}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DamagedFile(path, f"larger than {limit >> 20} MiB, far more than a run writes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise DamagedFile(path, "not text (not UTF-8)") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 and -1e999: valid JSON syntax, but not a number we wrote
        raise ValueError(f"{text} is not a finite number")
    return value


def _check_tree(obj, depth: int = 0) -> None:
    """ValueError unless ``obj`` is plain data (dicts with string keys, lists, strings, finite numbers,
    booleans, null) nested at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"a key that is not a string: {str(key)[:20]!r}")
            _check_tree(value, depth + 1)
    elif isinstance(obj, list):
        for value in obj:
            _check_tree(value, depth + 1)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{obj} is not a finite number")
    elif obj is not None and not isinstance(obj, (str, int, bool)):
        raise ValueError(f"holds a {type(obj).__name__}, not plain data")


def _parse_json(text: str):
    """Strict JSON (RFC 8259), finite numbers only, nested at most MAX_DEPTH deep; ValueError otherwise."""
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_tree(obj)
    return obj


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The type of each key of summary.json that plan and report read (absent keys: older records).
_STR, _INT, _NUM = "a string", "an integer", "a number"
_OPT = " or null"
SUMMARY_TYPES = {
    "status": _STR, "norm": _STR, "norm_tag": _STR, "conv": _STR, "model": _STR, "data": _STR, "device": _STR,
    "final_error": _NUM + _OPT, "final_epochs": _INT, "epochs_done": _INT, "batch": _INT, "workers": _INT,
    "epochs": _INT, "seed": _INT, "groups": _INT + _OPT, "channels_per_group": _INT + _OPT,
    "wall_seconds": _NUM + _OPT, "images_per_s": _NUM + _OPT, "lr": _NUM + _OPT, "processes": _INT,
    "skipped_images": _INT, "init": _STR + _OPT, "reason": _STR + _OPT, "error": _STR + _OPT,
    "val_errors": "a list of numbers",
}
# The keys of a metrics.jsonl row that the report reads (numbers; null where a value was not finite).
METRIC_KEYS = ("lr", "train_loss", "train_error", "val_loss", "val_error", "train_seconds", "epoch_seconds",
               "images_per_s", "train_images")


def _fits(value, kind: str) -> bool:
    if value is None:
        return kind.endswith(_OPT)
    base = kind.removesuffix(_OPT)
    if base == _STR:
        return isinstance(value, str)
    if base == _INT:
        return _integer(value)
    if base == _NUM:
        return _number(value)
    return isinstance(value, list) and all(v is None or _number(v) for v in value)  # a list of numbers


def _wrong_key(obj: dict, types: dict) -> Optional[str]:
    for key, kind in types.items():
        if key in obj and not _fits(obj[key], kind):
            return f"{key} is {_short(obj[key])}, not {kind}"
    return None


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_summary(summary, path: Path) -> dict:
    """``summary`` if it is a run summary with the right type at every key, else DamagedFile."""
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise DamagedFile(path, f"not a run summary: {str(summary)[:40]!r}")
    if summary["status"] not in FINISHED:
        raise DamagedFile(path, f"status {summary['status']!r} is not one of {', '.join(FINISHED)}")
    wrong = _wrong_key(summary, SUMMARY_TYPES)
    if wrong:
        raise DamagedFile(path, wrong)
    if summary["status"] == COMPLETE:
        error = summary.get("final_error")
        if not _number(error) or not 0 <= error <= 100:  # a complete run's result is an error in percent
            raise DamagedFile(path, f"a complete run whose final_error is {_short(error)}, not a percentage")
    return summary


def read_summary_file(path: Path) -> dict:
    """A summary.json as a dict; DamagedFile if it does not parse or is not a run summary."""
    path = Path(path)
    try:
        summary = _parse_json(_read_text(path))
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise DamagedFile(path, f"not JSON: {str(err).splitlines()[0]}") from None
    return check_summary(summary, path)


def read_summary(run_dir: Path) -> Optional[dict]:
    """The finished run's summary, None if it has none; DamagedFile (one line, with the fix) if it
    cannot be read."""
    path = Path(run_dir) / SUMMARY
    return read_summary_file(path) if os.path.lexists(path) else None


@dataclass
class RunStatus:
    status: str                     # one of the statuses above
    summary: Optional[dict] = None  # for a finished run
    reason: Optional[str] = None    # for a damaged one: "<file>: <why>"

    def __str__(self) -> str:
        return f"{self.status} ({self.reason})" if self.reason else self.status


def check_folder(run_dir: Path) -> None:
    """DamagedFile unless ``run_dir`` is absent or a real folder (not a file, not a symlink)."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise DamagedFile(run_dir, f"a symlink to {os.readlink(run_dir)}, not a run folder",
                          "run folders are never links: remove the link (its target is left alone)")
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise DamagedFile(run_dir, "a file, not a run folder", "move it away or choose another results_dir")


def run_status(run_dir: Path) -> RunStatus:
    """Where the run in ``run_dir`` stands, from all of its files (config, metrics, summary), the
    same way for plan, report and resume; never raises on a damaged file or folder."""
    run_dir = Path(run_dir)
    try:
        check_folder(run_dir)
        if os.path.lexists(run_dir / CONFIG):
            read_config(run_dir / CONFIG)
        summary = read_summary(run_dir)
        metrics = os.path.lexists(run_dir / METRICS)
        if metrics:
            read_jsonl(run_dir / METRICS)
    except DamagedFile as err:
        return RunStatus(DAMAGED, reason=f"{err.path.name}: {err.reason}")
    if summary is not None:
        return RunStatus(summary["status"], summary)
    return RunStatus(PARTIAL if metrics else PENDING)


def read_jsonl(path: Path, index: str = "epoch") -> list[dict]:
    """A JSON-lines file (metrics.jsonl: one dict per epoch; probe.jsonl: ``index="step"``) as dicts,
    each with an integer ``index``, increasing; DamagedFile naming the first bad line."""
    path = Path(path)
    rows = []
    lines = _read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = _parse_json(line)
        except json.JSONDecodeError:
            raise DamagedFile(path, f"line {number} is not JSON (a torn line?)") from None
        except ValueError as err:  # parsed, but not a number we write or not nested like our rows
            raise DamagedFile(path, f"line {number}: {str(err).splitlines()[0][:60]}") from None
        if not isinstance(row, dict) or not _integer(row.get(index)) or row[index] < 0:
            raise DamagedFile(path, f"line {number} has no integer {index!r}")
        if rows and row[index] <= rows[-1][index]:
            raise DamagedFile(path, f"line {number}: {index} {row[index]} does not follow {rows[-1][index]}")
        wrong = next((k for k in METRIC_KEYS if k in row and row[k] is not None and not _number(row[k])), None)
        if wrong:
            raise DamagedFile(path, f"line {number}: {wrong} is {_short(row[wrong])}, not a number")
        rows.append(row)
    return rows


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no tags that build objects) that refuses more than MAX_ALIASES aliases:
    an alias bomb (each level repeating the one below) never gets expanded by whoever walks the tree."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases",
                                                  event.start_mark)
        return super().compose_node(parent, index)


# The type of each top-level key of config.yaml that plan, report and resume read.
CONFIG_MAPPINGS = ("data", "model", "norm", "conv", "optim")
CONFIG_TYPES = {"batch": _INT, "workers": _INT, "epochs": _INT, "seed": _INT, "init": _STR + _OPT,
                "precision": _STR}


def read_config(path: Path) -> dict:
    """A run's config.yaml as a dict; DamagedFile if it does not parse or is not a config."""
    path = Path(path)
    text = _read_text(path)
    try:
        cfg = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise DamagedFile(path, f"not YAML: {' '.join(str(err).split())[:80]}") from None
    except RecursionError:
        raise DamagedFile(path, f"not YAML: nested deeper than {MAX_DEPTH} levels") from None
    try:
        _check_tree(cfg)
    except ValueError as err:  # YAML, but not a config the trainer writes (a date, inf, deep nesting)
        raise DamagedFile(path, str(err)) from None
    if not isinstance(cfg, dict):
        raise DamagedFile(path, f"not a config: {_short(cfg)}")
    for key in CONFIG_MAPPINGS:
        if key in cfg and not isinstance(cfg[key], dict):
            raise DamagedFile(path, f"{key} is {_short(cfg[key])}, not a mapping")
    wrong = _wrong_key(cfg, CONFIG_TYPES)
    if wrong:
        raise DamagedFile(path, wrong)
    return cfg


# What the trainer's save() puts in a checkpoint, and the type of each entry.
CHECKPOINT_KEYS = {"next_epoch": int, "meter": (list, type(None)), "epoch_lr": (float, int), "history": list,
                   "model": dict, "optimizer": dict, "scheduler": dict, "rng": list, "config": dict}


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint of this trainer (weights only: no code runs); DamagedFile otherwise."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise DamagedFile(path, f"cannot be read: {err.strerror}") from None
    if not stat.S_ISREG(mode):  # torch.load would wait forever on a FIFO
        raise DamagedFile(path, f"{'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}, "
                                "not a checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and how to recover
        raise DamagedFile(path, f"cannot be loaded: {type(err).__name__}") from None
    if not isinstance(ckpt, dict):
        raise DamagedFile(path, f"holds a {type(ckpt).__name__}, not a checkpoint of this trainer")
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise DamagedFile(path, f"no valid {key!r} entry: not a checkpoint of this trainer")
    if ckpt["next_epoch"] < 1 or not all(isinstance(row, dict) for row in ckpt["history"]):
        raise DamagedFile(path, "its epoch or history is not one this trainer writes")
    return ckpt


# ----------------------------------------------------------------------------------------- locking

class RunLock:
    """Exclusive use of a run folder by one process: a second launch is refused, naming the pid.

    Issue 24, item 1: the lock is the first thing written in the folder, and it never follows a
    link: the folder is opened with O_NOFOLLOW|O_DIRECTORY and ``.lock`` created in it with
    O_NOFOLLOW, so a symlink in either place is refused instead of truncating its target. The
    trainer's preflight locks every folder of the launch before Hydra writes anything
    (``hold``); the run's own RunLock then adopts that lock instead of refusing itself, and
    releases it when the run ends.
    """

    _handed: dict = {}  # resolved run folder -> lock fd taken by ``hold`` for this process's launch

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.fd: Optional[int] = None
        self.created = False  # whether this lock made the run folder (so a refusal may remove it)

    def _key(self) -> str:
        return os.path.realpath(self.run_dir)

    def hold(self) -> "RunLock":
        """Take the lock now and keep it for the run of this process that will open this folder."""
        self.__enter__()
        RunLock._handed[self._key()] = self.fd
        return self

    def __enter__(self) -> "RunLock":
        check_folder(self.run_dir)
        handed = RunLock._handed.pop(self._key(), None)
        if handed is not None:
            self.fd = handed
            return self
        self.created = not os.path.lexists(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dir_fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as err:
            raise ConfigError(f"cannot create the run folder {self.run_dir} ({err.strerror}); "
                              "choose a writable results_dir") from None
        try:
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666,
                         dir_fd=dir_fd)
        except OSError as err:
            self._forget_folder(dir_fd)
            if err.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symlink; a run's lock is never a link (its target is left "
                                  f"alone): remove the link and relaunch") from None
            if err.errno == errno.EISDIR:
                raise ConfigError(f"{self.path} is a directory; remove it and relaunch") from None
            raise ConfigError(f"cannot create {self.path} ({err.strerror}); choose a writable results_dir") from None
        os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"{self.path} is not a regular file; remove it and relaunch")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FolderInUse(f"{self.path.parent} is already running (pid {_pid(self.path)}); "
                              f"wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _forget_folder(self, dir_fd: int) -> None:
        os.close(dir_fd)
        if self.created:  # made by this lock and still empty: leave nothing behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is not None:
            RunLock._handed.pop(self._key(), None)
            os.close(self.fd)  # releases the lock; the file stays (unlinking it would race a new locker)
            self.fd = None

    def discard(self, keep: frozenset = frozenset()) -> bool:
        """Remove the run folder while holding its lock, if it holds nothing a run made (only names in
        ``keep``: what Hydra and the lock put there, or a config written before a failure); its empty
        parents under the current directory go too. Never called without the lock: a process that was
        refused the folder leaves it exactly as it was."""
        if self.fd is None:
            return False
        names = {p.name for p in self.run_dir.iterdir()}
        if not names <= keep | {LOCK}:
            return False
        for name in names - {LOCK}:
            target = self.run_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        (self.run_dir / LOCK).unlink(missing_ok=True)  # still locked through our fd until release
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()
        cwd, parent = Path.cwd().resolve(), self.run_dir.absolute().parent
        with contextlib.suppress(OSError):  # another process of the same sweep may have removed it first
            while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        return True


def release_unused_locks() -> None:
    """At the end of a launch: folders locked up front (``RunLock.hold``) whose job never started (a
    sweep stopped by a failed job or a signal) are released, and removed if they hold only the lock."""
    for key, fd in list(RunLock._handed.items()):
        lock = RunLock(Path(key))
        lock.fd = fd
        lock.discard()
        lock.release()


def _pid(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "?"
    try:
        return os.read(fd, 32).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"
    finally:
        os.close(fd)


def running_pid(run_dir: Path) -> Optional[str]:
    """The pid of the process training ``run_dir`` now, or None if no process holds its lock."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return _pid(path)
    finally:
        os.close(fd)
