"""A real one-node SLURM cluster (``scripts/local_slurm.sh``) for the cluster tests.

The cluster is started once per test session from the Debian packages (``slurm-wlm``, ``munge``;
``.ci/run`` installs them when it runs as root) and stopped at the end: no daemon, job or temp
folder is left. Where the packages or root are missing, every cluster test is skipped with one
line saying why. Jobs are real: ``python -m gnrepro.train -m hydra/launcher=slurm`` submits them
through hydra-submitit-launcher and ``sbatch``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cluster.helpers import SCRIPT, TINY, Cluster, train, wait_for, why_no_cluster


@pytest.fixture(scope="session")
def slurm():
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    conf = start.stdout.strip().rsplit("=", 1)[1]
    try:
        yield Cluster(conf)
    finally:
        stop = subprocess.run(["bash", str(SCRIPT), "stop", str(Path(conf).parent)], capture_output=True,
                              text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr


@pytest.fixture
def cluster(slurm):
    """The session's cluster, with an empty queue before and after the test (a job whose result the
    launcher has read may still be completing: its other tasks exiting, SLURM's epilogue)."""
    assert slurm.jobs() == [], "a job of an earlier test is still queued"
    yield slurm
    try:
        wait_for(lambda: not slurm.jobs(), 60, "the queue to empty")
    except AssertionError:
        left = slurm.jobs()
        slurm.run("scancel", *left, check=False)
        wait_for(lambda: not slurm.jobs(), 60, "the queue to empty after scancel")
        pytest.fail(f"jobs {left} were still queued 60 s after the test (cancelled)")


@pytest.fixture(scope="session")
def one_process_bn(tmp_path_factory) -> Path:
    """The reference of the multi-process tests: 2 BN workers emulated in one process (1 epoch)."""
    cwd = tmp_path_factory.mktemp("one_process")
    proc = train(cwd, *TINY, "norm=bn", "epochs=1", "results_dir=one")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "one" / "digits_resnet14" / "bn_b4x2_e1_s0_sub32"
