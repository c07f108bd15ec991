"""Figures checked through the data they plot, not only that a PNG exists: the report's Figure 1 is
captured at ``savefig`` and the points of its lines are compared with what the run folders and the
published CSV say (the mean over seeds of each setting's reported error, the paper's numbers)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from fake_runs import fake_run
from gnrepro import report, resources

matplotlib.use("Agg")

BATCHES = (32, 16, 8, 4, 2)
PUBLISHED = resources.PUBLISHED  # the paper's numbers, as shipped (gnrepro/paper/published_results.csv)


def fig1_points(fig) -> dict[str, dict[str, list]]:
    """{panel title's first word: {legend label: (x, y)}} of every line with data in the figure."""
    out = {}
    for ax in fig.axes:
        lines = {}
        drawn = [(c.get_label(), c.lines[0]) for c in ax.containers if c.lines[0] is not None]  # errorbar: its data line
        drawn += [(line.get_label(), line) for line in ax.get_lines()]
        for label, line in drawn:
            if label.startswith("_"):  # error-bar caps and stems, the errorbar's own line: no label
                continue
            lines[label.split(" (n=")[0]] = (list(line.get_xdata()), list(line.get_ydata()))
        out["reproduced" if "reproduced" in ax.get_title() or "PROXY" in ax.get_title() else "published"] = lines
    return out


def check_fig1(fig, errors: dict[tuple[str, int], list[float]], pub: pd.DataFrame) -> None:
    """The reproduced panel draws, for BN and GN, each batch's mean error over seeds at that batch;
    the published panel the paper's Figure 1 numbers."""
    points = fig1_points(fig)
    for tag, norm, label in (("bn", "bn", "BN"), ("gn32", "gn", "GN")):
        x, y = points["reproduced"][label]
        want = {b: float(np.mean(errors[(tag, b)])) for b in BATCHES if (tag, b) in errors}
        assert dict(zip(x, y)) == pytest.approx(want), (label, dict(zip(x, y)), want)
        p = pub[(pub.experiment == "batch_size") & (pub.model == "resnet50") & (pub.norm == norm)]
        x, y = points["published"][label]
        assert dict(zip(x, y)) == pytest.approx(dict(zip(p.images_per_worker, p.top1_error_pct))), label


def test_figure1_plots_the_mean_error_per_batch_and_the_published_curve(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    errors = {}
    for tag, norm in (("bn", "bn"), ("gn32", "gn")):
        for b in BATCHES:
            for seed in (0, 1):  # two seeds with distinct errors: the line must be their mean
                e = float(np.round(rng.uniform(20, 40), 2))
                errors.setdefault((tag, b), []).append(e)
                fake_run(tmp_path / "runs", norm=norm, batch=b, seed=seed, error=e)
    saved = {}
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: saved.__setitem__(Path(path).name, fig))
    report.build_report(tmp_path / "runs", tmp_path / "out")
    pub = pd.read_csv(PUBLISHED)
    check_fig1(saved["fig1_batch_size.png"], errors, pub)

    # Negative controls: the same check rejects a figure drawn from other data.
    swapped = {(("gn32" if t == "bn" else "bn"), b): v for (t, b), v in errors.items()}  # BN's line from GN's runs
    with pytest.raises(AssertionError):
        check_fig1(saved["fig1_batch_size.png"], swapped, pub)
    first_seed = {k: v[:1] for k, v in errors.items()}  # one seed instead of the mean
    with pytest.raises(AssertionError):
        check_fig1(saved["fig1_batch_size.png"], first_seed, pub)
    shifted = pub.copy()
    shifted.loc[shifted.experiment == "batch_size", "top1_error_pct"] += 1  # other published numbers
    with pytest.raises(AssertionError):
        check_fig1(saved["fig1_batch_size.png"], errors, shifted)
