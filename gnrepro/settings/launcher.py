"""Before a sweep goes to SLURM (``hydra/launcher=slurm``): ask ``sbatch --test-only`` whether the
cluster would take its jobs, so a mistake is one line instead of submitit's traceback.

The request is the one hydra-submitit-launcher will submit (the same parameters, turned into an
sbatch script by submitit itself); ``--test-only`` validates it and submits nothing. Refused (no
cluster reachable from here, an unknown partition or account, more CPUs or memory than a node
has) or without ``sbatch`` at all: ``ConfigError`` naming sbatch's reason and the keys to check.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from gnrepro.errors import ConfigError

SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
UNREACHABLE = ("configuration source", "contact slurm controller", "Unable to contact")  # sbatch without a cluster
KEYS = "hydra.launcher.partition, account, cpus_per_task, mem_gb, gpus_per_node, tasks_per_node and timeout_min"


def sbatch_reason(stderr: str) -> str:
    """sbatch's own reason: its last ``error:``/``fatal:`` line, without the ``sbatch:`` prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        for tag in ("sbatch: fatal:", "sbatch: error:"):
            if line.startswith(tag):
                return line[len(tag):].strip()
    return lines[-1] if lines else "no message"


def sbatch_script(launcher: dict) -> str:
    """The sbatch script hydra-submitit-launcher submits for one job of this launcher config (its
    ``launch`` turns the config into submitit parameters this way)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = {k: v for k, v in launcher.items() if k != "_target_"}
    init = {"slurm_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    folder = params.pop("submitit_folder")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("true", "preflight")


def check_slurm(launcher_cfg) -> None:
    """ConfigError unless ``sbatch --test-only`` accepts a job of ``launcher_cfg`` (``cfg.hydra.launcher``);
    nothing to do for another launcher."""
    if launcher_cfg is None or launcher_cfg.get("_target_") != SUBMITIT_SLURM:
        return
    if shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=slurm needs sbatch, which is not installed here: run the command on a "
                          "machine of the SLURM cluster (its login node), or drop hydra/launcher=slurm to train here")
    script = sbatch_script(OmegaConf.to_container(launcher_cfg, resolve=True))
    with tempfile.TemporaryDirectory(prefix="gnrepro-sbatch-") as tmp:
        path = Path(tmp) / "job.sh"
        path.write_text(script)
        try:
            proc = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise ConfigError("sbatch --test-only did not answer in 60 s: is the SLURM controller up? "
                              "(`sinfo` should list the partitions)") from None
    if proc.returncode != 0 and any(s in proc.stderr for s in UNREACHABLE):
        raise ConfigError(f"no SLURM controller answers here (sbatch: {sbatch_reason(proc.stderr)}): run the command "
                          f"on the cluster's login node, or point SLURM_CONF at its slurm.conf")
    if proc.returncode != 0:
        raise ConfigError(f"SLURM would refuse the jobs (sbatch --test-only: {sbatch_reason(proc.stderr)}); "
                          f"check {KEYS} against `sinfo` (docs/clusters.md)")


def check_launcher(argv: list[str]) -> None:
    """``check_slurm`` for a sweep whose command line selects ``hydra/launcher=slurm`` (the first job's
    launcher config: every job of a sweep shares it)."""
    from gnrepro.settings.preflight import _overrides, compose_config, sweep_jobs

    overrides = _overrides(argv)
    if not ("-m" in argv or "--multirun" in argv) or not any(o.split("=")[0].lstrip("+~") == "hydra/launcher"
                                                             for o in overrides):
        return
    cfg = compose_config(sweep_jobs(overrides)[0])
    check_slurm(cfg.hydra.launcher)
