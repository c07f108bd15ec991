"""What the cluster tests share: the CPU user's launcher overrides, a tiny run, the cluster's commands."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
INSTALL = "apt-get update && apt-get install -y slurm-wlm munge"


def launcher(partition: str, tasks: int = 1, gpus="null") -> tuple[str, ...]:
    """A CPU cluster user's overrides of the shipped launcher config (configs/hydra/launcher/slurm.yaml)."""
    return ("hydra/launcher=slurm", f"hydra.launcher.partition={partition}", f"hydra.launcher.gpus_per_node={gpus}",
            f"hydra.launcher.tasks_per_node={tasks}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10")


# A run of a few seconds: 4 steps of 2 workers x 4 images per epoch on a 32-image subset (as tests/test_distributed.py).
TINY = ("model=resnet14", "batch=4", "workers=2", "data.subset=32", "data.image_size=10", "eval_batch=512",
        "progress=false", "deterministic=true", "keep_checkpoint=last")  # the tests compare last.pt


def why_no_cluster() -> str | None:
    if shutil.which("bash") is None:
        return "no bash to run scripts/local_slurm.sh"
    missing = subprocess.run(["bash", str(SCRIPT), "missing"], capture_output=True, text=True).stdout.split()
    if missing:
        return f"SLURM is not installed (missing {' '.join(missing)}): {INSTALL} (docs/clusters.md)"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs its daemons as root (SlurmUser=root); run the cluster tests as root"
    return None


@dataclass
class Cluster:
    conf: str
    partition: str = "local"

    @property
    def env(self) -> dict:
        """The environment jobs are submitted with (sbatch passes it on to the job)."""
        return {**os.environ, "SLURM_CONF": self.conf, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0",
                "OMP_NUM_THREADS": "1"}

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    def jobs(self) -> list[str]:
        """Job ids in the queue (pending, running or completing)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def state(self, job: str) -> str:
        return self.run("squeue", "-h", "-j", job, "-o", "%T", check=False).strip()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 0.5):
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` s (or if ``proc`` ended first)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()  # None where stderr went to a file: the test names that file
            raise AssertionError(f"the launcher exited ({proc.returncode}) while waiting for {what}:\n{(err or '')[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "gnrepro.train", *overrides]


def train(cwd: Path, *overrides: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m gnrepro.train`` in ``cwd``: a run on this machine, or a sweep the launcher submits."""
    env = env or {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(train_cmd(*overrides), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def final_state(run_dir: Path) -> tuple[dict, list[dict]]:
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    return ckpt["model"], ckpt["history"]


def max_diff(a: dict, b: dict, only=lambda k: True) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if only(k))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
