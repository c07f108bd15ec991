"""Stopping cleanly when a cluster reclaims the job.

SLURM sends SIGTERM before killing a preempted job, and ``sbatch --signal=USR1@T`` (or
submitit's USR2) warns T seconds before a time limit. On any of these the run finishes its
current step, saves a checkpoint and stops; relaunching the same command resumes it. A handler
that was installed before ours (submitit's requeue handler) is called after the checkpoint is
written, so submitit still requeues the job.
"""
from __future__ import annotations

import signal
from typing import Optional

from gnrepro.errors import EXIT_STOPPED

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


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
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a launcher's worker thread): leave signals alone
                break
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        # Hand the signal on to whoever listened before us (submitit requeues the job there).
        if isinstance(exc, Preempted) and callable(self._previous.get(exc.signum)):
            self._previous[exc.signum](exc.signum, None)
