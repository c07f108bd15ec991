"""A non-editable install works from any folder: the wheel carries the Hydra configs
(gnrepro/configs), and a tiny training runs from it with no checkout on the path."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_trains_from_another_folder(tmp_path):
    src = tmp_path / "src"  # build from a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gnrepro", src / "gnrepro", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("gnrepro-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("gnrepro/configs/")}
    in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / "gnrepro" / "configs").rglob("*.yaml")}
    assert shipped == in_repo

    site = tmp_path / "site"  # the installed package alone; its dependencies come from this environment
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "model=resnet26", "batch=2", "workers=1", "epochs=1",
                           "data.subset=8", "final_epochs=1", "progress=false"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (work / "results/runs/digits_resnet26/bn_b2x1_e1_s0/summary.json").is_file()
    check = subprocess.run([sys.executable, "-c", "import gnrepro; print(gnrepro.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert check.stdout.strip().startswith(str(site)), check.stdout
