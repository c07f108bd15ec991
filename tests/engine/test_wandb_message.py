"""logger=wandb says where its offline run went and how to upload it (issue 25): wandb itself is
silenced, so without these lines nothing tells the user that a run was recorded at all."""
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_an_offline_wandb_run_names_its_folder_and_the_sync_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", WANDB_SILENT="true", HOME=str(tmp_path))  # no user's wandb settings
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "logger=wandb", "model=resnet14", "batch=4",
                           "workers=1", "epochs=1", "final_epochs=1", "data.subset=8", "data.image_size=8",
                           "progress=false", "keep_checkpoint=none"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder,) = tmp_path.glob("outputs/runs/*/*/wandb/offline-run-*")
    assert f"W&B: offline run saved in {folder}; upload it with: wandb sync {folder}" in proc.stdout
    assert f"W&B: logging offline to {folder}" in proc.stdout
    assert any(folder.glob("*.wandb"))  # what `wandb sync` uploads
