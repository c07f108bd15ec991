"""User-facing errors and the exit codes of the command-line tools (train, evaluate, plan, report).

A user mistake is one line on stderr, ``gnrepro: error: <what is wrong and the fix>``, and exit
code 2, never a traceback. Every such mistake is a ``UserError``, which the command-line tools catch
and print with ``error_line``; its kinds say what the user has to fix: ``ConfigError`` (a value of the
config or the command line), ``DataError`` (gnrepro.data: a data set missing or not in its format),
``DamagedFile`` (gnrepro.runfiles: a run file that does not parse), ``FolderInUse`` (a run folder
another process holds).

Exit codes:

- 0: done (or nothing to do: the run was already complete or failed);
- 1: a run failed (non-finite loss or weights; marked failed in its summary.json);
- 2: a user mistake (a bad value, a damaged or foreign file, a run folder in use): fix it and rerun;
- 3: stopped on a signal (SIGTERM, SIGUSR1, SIGUSR2) after saving a checkpoint: relaunch to resume.
"""
from __future__ import annotations

import argparse
import sys

EXIT_FAILED = 1
EXIT_USER = 2
EXIT_STOPPED = 3  # the run stopped early on purpose (preemption): relaunch it to resume


class UserError(ValueError):
    """A user-facing mistake: the message names the bad value (or file) and the fix. A ValueError, so
    pydantic validators and argparse types may raise it too."""


class ConfigError(UserError):
    """A bad value of the config or the command line."""


class FolderInUse(UserError):
    """A run folder that another process holds (its lock): nothing of it is touched."""


def is_int(value) -> bool:
    """An integer, and not a bool (True is an int to Python, never a count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    """``value`` if it is a positive integer, else ConfigError naming ``name``: the one check of a
    count (schema's ``Int(min=1)``, GN's groups, BN's workers)."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def error_line(err) -> str:
    """``gnrepro: error: <message>`` on one line, however many lines the message had."""
    return "gnrepro: error: " + " ".join(str(err).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``gnrepro: error:`` line and exit code 2 (no usage block)."""

    def error(self, message: str):
        print(error_line(f"{message} (see {self.prog} --help)"), file=sys.stderr)
        sys.exit(EXIT_USER)
