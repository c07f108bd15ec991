"""What a run leaves on disk, written so that a kill at any moment leaves either the old or the
new version of each file (temp file in the same folder, then an atomic rename), and read back so
that a damaged or foreign file is named in one line with its fix, never a traceback.

A run folder's status has one vocabulary, ``run_status``, that plan, report and resume all read.

JSON is strict (RFC 8259): a non-finite number is written as null, and a file holding NaN or
Infinity is damaged. A run folder is locked (``flock`` on ``.lock``) while a process trains it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import yaml

from gnrepro.errors import FolderInUse, UserError

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

def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str):
    return json.loads(text, parse_constant=_no_constant)


def read_summary_file(path: Path) -> dict:
    """A summary.json as a dict; DamagedFile if it does not parse or is not a run summary."""
    path = Path(path)
    try:
        summary = _parse_json(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFile(path, f"not JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise DamagedFile(path, f"not a run summary: {str(summary)[:40]!r}")
    if summary["status"] not in FINISHED:
        raise DamagedFile(path, f"status {summary['status']!r} is not one of {', '.join(FINISHED)}")
    return summary


def read_summary(run_dir: Path) -> Optional[dict]:
    """The finished run's summary, None if it has none; DamagedFile (one line, with the fix) if it
    cannot be read."""
    path = Path(run_dir) / SUMMARY
    return read_summary_file(path) if path.is_file() else None


@dataclass
class RunStatus:
    status: str                     # one of the statuses above
    summary: Optional[dict] = None  # for a finished run
    reason: Optional[str] = None    # for a damaged one: "<file>: <why>"

    def __str__(self) -> str:
        return f"{self.status} ({self.reason})" if self.reason else self.status


def run_status(run_dir: Path) -> RunStatus:
    """Where the run in ``run_dir`` stands, from its files; never raises on a damaged file."""
    run_dir = Path(run_dir)
    try:
        summary = read_summary(run_dir)
    except DamagedFile as err:
        return RunStatus(DAMAGED, reason=f"{err.path.name}: {err.reason}")
    if summary is not None:
        return RunStatus(summary["status"], summary)
    return RunStatus(PARTIAL if (run_dir / METRICS).is_file() else PENDING)


def read_jsonl(path: Path, index: str = "epoch") -> list[dict]:
    """A JSON-lines file (metrics.jsonl: one dict per epoch; probe.jsonl: ``index="step"``) as dicts,
    each with an integer ``index``; DamagedFile naming the first bad line."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise DamagedFile(path, "not text") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = _parse_json(line)
        except ValueError:
            raise DamagedFile(path, f"line {number} is not JSON (a torn line?)") from None
        if not isinstance(row, dict) or not isinstance(row.get(index), int):
            raise DamagedFile(path, f"line {number} has no integer {index!r}")
        rows.append(row)
    return rows


def read_config(path: Path) -> dict:
    """A run's config.yaml as a dict; DamagedFile if it does not parse or is not a mapping."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DamagedFile(path, f"not YAML: {' '.join(str(err).split())[:80]}") from None
    if not isinstance(cfg, dict):
        raise DamagedFile(path, f"not a config: {str(cfg)[:40]!r}")
    return cfg


# What the trainer's save() puts in a checkpoint, and the type of each entry.
CHECKPOINT_KEYS = {"next_epoch": int, "meter": (list, type(None)), "epoch_lr": (float, int), "history": list,
                   "model": dict, "optimizer": dict, "scheduler": dict, "rng": list, "config": dict}


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint of this trainer (weights only: no code runs); DamagedFile otherwise."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and how to recover
        raise DamagedFile(path, f"cannot be loaded: {type(err).__name__}") from None
    if not isinstance(ckpt, dict):
        raise DamagedFile(path, f"holds a {type(ckpt).__name__}, not a checkpoint of this trainer")
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind):
            raise DamagedFile(path, f"no valid {key!r} entry: not a checkpoint of this trainer")
    return ckpt


# ----------------------------------------------------------------------------------------- locking

class RunLock:
    """Exclusive use of a run folder by one process: a second launch is refused, naming the pid."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (unlinking it would race a new locker)
            self.fd = None


def _pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def running_pid(run_dir: Path) -> Optional[str]:
    """The pid of the process training ``run_dir`` now, or None if no process holds its lock."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return _pid(path)
    finally:
        os.close(fd)
