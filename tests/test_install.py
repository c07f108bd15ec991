"""The package is complete on its own: the wheel carries the Hydra configs (mapped from the checkout's
top-level configs/) and the paper's published numbers, and every command runs from it in an unrelated
folder with no checkout on the path; a plain checkout that was never installed finds the same configs."""
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage():
    """packages is written out by hand (the configs mapping needs it): a new subpackage left off the list
    would be missing from the wheel while every editable-install test still passed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gnrepro").rglob("__init__.py")}
    assert on_disk | {"gnrepro.configs"} == listed


def _copy_checkout(dest: Path) -> Path:
    """The files a build or a plain checkout needs, without caches (an in-tree build would leave build/)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("gnrepro", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _run(args, cwd, env, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_alone_runs_train_plan_report_and_evaluate_from_another_folder(tmp_path):
    src = _copy_checkout(tmp_path / "src")
    build = _run(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                 cwd=tmp_path, env=None)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("gnrepro-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("gnrepro/") for n in names if n.startswith("gnrepro/configs/") and n.endswith(".yaml")}
    assert shipped == {str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")}
    assert "gnrepro/paper/published_results.csv" in names

    site = tmp_path / "site"  # the installed package alone; its dependencies come from this environment
    install = _run(["-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], cwd=tmp_path, env=None)
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "HYDRA_FULL_ERROR": "0"}
    where = _run(["-c", "import gnrepro.resources as r; print(r.CONFIGS); print(r.PUBLISHED)"], cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout

    train = _run(["-m", "gnrepro.train", "model=resnet26", "batch=2", "workers=1", "epochs=1", "data.subset=8",
                  "final_epochs=1", "progress=false"], cwd=work, env=env)
    assert train.returncode == 0, train.stderr[-2000:]
    (summary,) = work.glob("outputs/runs/digits_resnet26/*/summary.json")

    plan = _run(["-m", "gnrepro.plan", "experiment=fig1_batch_size", "data.root=/nowhere"], cwd=work, env=env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "fig1_batch_size" in plan.stdout or "bn" in plan.stdout

    report = _run(["-m", "gnrepro.report", "--out", str(work / "reports")], cwd=work, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert any((work / "reports").rglob("*.md"))

    refusal = _run(["-m", "gnrepro.evaluate", "weights=R-50-GN", "data=imagenet", f"data.root={work / 'missing'}"],
                   cwd=work, env=env)
    assert refusal.returncode == 2, refusal.stderr
    assert refusal.stderr.strip().count("\n") == 0 and refusal.stderr.startswith("gnrepro: error:"), refusal.stderr
    assert "Traceback" not in refusal.stderr


@pytest.mark.slow
def test_a_plain_checkout_never_installed_composes_its_top_level_configs(tmp_path):
    """``python -S`` skips site-packages' .pth files, so this environment's editable install (which maps
    gnrepro.configs to the real checkout) is not there: the copy must find configs/ beside its package."""
    checkout = _copy_checkout(tmp_path / "checkout")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{checkout}:{sysconfig.get_paths()['purelib']}",
           "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    where = subprocess.run([sys.executable, "-S", "-c", "import gnrepro.resources as r; print(r.CONFIGS)"],
                           cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip() == str(checkout / "configs")
    cfg = subprocess.run([sys.executable, "-S", "-m", "gnrepro.train", "norm=gn", "batch=2", "--cfg", "job"],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "name: gn" in cfg.stdout


def test_the_device_wheels_are_the_versions_this_environment_runs():
    """scripts/device_wheels.sh fetches, for a GPU machine without internet, the packages beyond its
    PyTorch stack: each pinned at the version installed from pyproject.toml here, so a pin bumped in
    one place and not the other is caught before a device's minutes are spent on it."""
    from importlib.metadata import version

    script = (ROOT / "scripts" / "device_wheels.sh").read_text()
    pins = dict(re.findall(r"\b([a-z][a-z0-9-]+)==([0-9][0-9.]*)\b", script))
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "pydantic", "pydantic-core"} <= set(pins)
    assert {name: version(name) for name in pins} == pins
