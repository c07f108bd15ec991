"""Stopping cleanly when a cluster reclaims the job.

SLURM sends SIGTERM before killing a preempted job, and ``sbatch --signal=USR1@T`` (or
submitit's USR2) warns T seconds before a time limit. On any of these, and on Ctrl-C (SIGINT) or a
closed terminal (SIGHUP), the run finishes its current step, saves a checkpoint and stops (exit 3);
relaunching the same command resumes it. A signal that was ignored when the run started (``nohup``,
a shell's background job) stays ignored. Before training starts (``startup_signals``), the same
signals end the launch with one line and leave nothing behind (issue 24, item 5). A handler
that was installed before ours (submitit's requeue handler) is called after the checkpoint is
written, so submitit still requeues the job.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Optional

from gnrepro.errors import EXIT_STOPPED

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    """A preemption signal arrived; the checkpoint is saved."""

    exit_code = EXIT_STOPPED

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received: checkpoint saved at epoch {epoch}, "
                         f"step {step}; relaunch the same command to resume")


class PreemptionSignals:
    """Context manager that records the first preemption signal instead of dying on it."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> "PreemptionSignals":
        for sig in SIGNALS:
            try:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a launcher's worker thread): leave signals alone
                break
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        # Hand the signal on to whoever listened before us (submitit requeues the job there).
        # Not to the start-up handler or Python's KeyboardInterrupt: the checkpoint is the answer to those.
        handler = self._previous.get(exc.signum) if isinstance(exc, Preempted) else None
        if callable(handler) and handler not in (_interrupt, signal.default_int_handler):
            handler(exc.signum, None)


class Interrupted(BaseException):
    """A signal arrived before training started (preflight, Hydra's set-up, building the data and the
    model is inside ``PreemptionSignals`` instead). A BaseException like KeyboardInterrupt, so that no
    ``except Exception`` on the way (Hydra's) turns it into a traceback; gnrepro.train prints it."""

    exit_code = EXIT_STOPPED

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received before training started; nothing was "
                         f"trained or kept; relaunch the same command")


def _interrupt(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def startup_signals():
    """Raise ``Interrupted`` on any of ``SIGNALS`` (unless ignored) until the block ends; restore after."""
    previous = {}
    try:
        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
