"""The one-line messages of the cluster paths, without a cluster (tests/cluster runs them for real)."""
from argparse import Namespace

from omegaconf import OmegaConf
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousTimeoutError

from gnrepro.settings.launcher import check_slurm, sbatch_reason
from gnrepro.torchrun import rendezvous_message


def test_sbatch_reason_is_its_last_error_line_without_the_prefix():
    stderr = "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: Invalid partition\n"
    assert sbatch_reason(stderr) == "Batch job submission failed: Invalid partition"
    assert sbatch_reason("sbatch: fatal: Could not establish a configuration source\n") == \
        "Could not establish a configuration source"
    assert sbatch_reason("something else\n") == "something else" and sbatch_reason("") == "no message"


def test_other_launchers_are_not_checked_with_sbatch():
    check_slurm(None)
    check_slurm(OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}))


def test_rendezvous_messages_name_the_endpoint_the_nodes_and_the_timeout():
    args = Namespace(rdzv_endpoint="node0:29500", rdzv_id="gn", nnodes="2", rdzv_conf="join_timeout=30,is_host=true")
    timeout = rendezvous_message(args, RendezvousTimeoutError())
    assert timeout.startswith("rendezvous at --rdzv-endpoint node0:29500 (--rdzv-id gn) timed out after 30 s: "
                              "--nnodes 2 asked for more nodes than joined")
    assert "timed out after 600 s" in rendezvous_message(Namespace(**{**vars(args), "rdzv_conf": ""}),
                                                         RendezvousTimeoutError())
    assert rendezvous_message(args, RendezvousConnectionError("refused")).startswith(
        "cannot reach the rendezvous at --rdzv-endpoint node0:29500 (--rdzv-id gn)")
