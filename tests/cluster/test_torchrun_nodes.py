"""Multi-node rendezvous without SLURM: two torchrun agents (``python -m gnrepro.torchrun``, i.e.
torch.distributed.run) with ``--nnodes 2`` on localhost meet at a c10d endpoint and train one run,
equal to the one-process emulation; a second node that never comes is one line after the join
timeout, not a hang or a traceback."""
import os
import subprocess
import sys
import time

import pytest

from cluster.helpers import TINY, final_state, free_port, max_diff

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def agent(port: int, *rdzv_conf: str) -> list[str]:
    conf = ",".join(rdzv_conf)
    return [sys.executable, "-m", "gnrepro.torchrun", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "gnrepro-test", "--local-addr", "127.0.0.1",
            *(["--rdzv-conf", conf] if conf else []), "-m", "gnrepro.train", *TINY, "norm=bn", "epochs=1",
            "results_dir=nodes"]


def env(tmp_path) -> dict:  # TMPDIR: torchrun's own log folders (torchelastic_*) go there, not /tmp
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}


def test_two_nodes_on_localhost_train_one_run_equal_to_one_process(tmp_path, one_process_bn):
    port = free_port()
    # The first node hosts the rendezvous store at the endpoint, as the head node of a real cluster would.
    logs = [open(tmp_path / f"node{i}.err", "w") for i in (0, 1)]
    nodes = [subprocess.Popen(agent(port, f"is_host={'true' if i == 0 else 'false'}", "join_timeout=120"),
                              cwd=tmp_path, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=logs[i])
             for i in (0, 1)]
    try:
        codes = [n.wait(timeout=600) for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
        for f in logs:
            f.close()
    assert codes == [0, 0], [(tmp_path / f"node{i}.err").read_text()[-2000:] for i in (0, 1)]
    run = tmp_path / "nodes" / "digits_resnet14" / "bn_b4x2_e1_s0_sub32"
    (a, hist_a), (b, hist_b) = final_state(one_process_bn), final_state(run)
    assert max_diff(a, b) <= 1e-5, max_diff(a, b)
    assert max_diff(a, b, lambda k: "running" in k) <= 1e-5
    assert hist_a[0]["train_loss"] == pytest.approx(hist_b[0]["train_loss"], abs=1e-5)
    assert hist_a[0]["val_error"] == pytest.approx(hist_b[0]["val_error"], abs=1e-9)


def test_a_missing_second_node_is_one_line_after_the_join_timeout(tmp_path):
    port = free_port()
    start = time.monotonic()
    proc = subprocess.run(agent(port, "join_timeout=3"), cwd=tmp_path, env=env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gnrepro: error: rendezvous at --rdzv-endpoint 127.0.0.1:{port} (--rdzv-id gnrepro-test) timed out after "
        "3 s: --nnodes 2 asked for more nodes than joined; start the same command on the other node(s) with the "
        "same --rdzv-endpoint and --rdzv-id, or give them longer with --rdzv-conf join_timeout=SECONDS"]
    assert not (tmp_path / "nodes").exists()  # nothing trained, no run folder
