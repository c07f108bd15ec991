"""Both notebooks execute top to bottom (nbclient), so they cannot silently rot."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the dev extra; absent on a GPU image running only the device check
NotebookClient = pytest.importorskip("nbclient").NotebookClient

from fake_runs import fake_paper, fake_run

ROOT = Path(__file__).resolve().parents[1]


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb


def outputs(nb) -> str:
    return "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


@pytest.mark.slow
def test_norms_notebook_executes():
    text = outputs(execute("norms_on_a_tensor.ipynb"))
    assert "GN(G=1) == LN" in text and "GN: S_i = [2.0, 3.0, 5.0, 7.0]" in text  # channels 0-1 of image a


@pytest.mark.slow
def test_results_notebook_executes_and_draws_the_figures(tmp_path, monkeypatch):
    fake_paper(tmp_path / "runs", seeds=(0,))
    fake_run(tmp_path / "runs", norm="gn", batch=2, seed=5, status="failed")
    monkeypatch.setenv("GNREPRO_RUNS", str(tmp_path / "runs"))  # the kernel inherits the environment
    nb = execute("results_and_figures.ipynb")
    text = outputs(nb)
    assert "runs under" in text and "fig1_batch_size.png" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4
