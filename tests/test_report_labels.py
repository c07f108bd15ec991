"""What the report's figures say (issue 25): Table 3 on one labelled axis, Figure 5's BN/GN pairs in
one colour per batch size, counts in the singular where they are one, and no matplotlib warning."""
import warnings

import matplotlib.pyplot as plt
import pytest

from fake_runs import fake_run
from gnrepro import report


@pytest.fixture
def figures(monkeypatch):
    """The figures the report draws, kept open instead of closed after saving."""
    drawn = []
    monkeypatch.setattr(report.plt, "close", lambda fig=None: drawn.append(fig))
    yield drawn
    plt.close("all")


def by_title(figures, text):
    (fig,) = [f for f in figures if any(text in a.get_title() for a in f.axes)]
    return fig


def test_table3_draws_reproduced_and_published_on_one_labelled_axis(tmp_path, figures):
    for g in (32, 16, 8):
        fake_run(tmp_path / "runs", data="digits", norm="gn", groups=g, error=10.0 + g / 8)
    report.build_report(tmp_path / "runs", tmp_path / "out")
    fig = by_title(figures, "Table 3")
    (ax,) = fig.axes  # no second y axis whose own scale would stretch the flat published curve
    assert ax.get_ylabel() == "top-1 val error (%)" and ax.get_xlabel()
    assert {line.get_label() for line in ax.get_lines()} >= {"published (ImageNet)"}
    assert ax.get_legend() is not None


def test_fig5_pairs_bn_and_gn_by_colour_one_per_batch_size(tmp_path, figures):
    for norm in ("bn", "gn"):
        for batch in (32, 8, 2):
            fake_run(tmp_path / "runs", data="digits", norm=norm, batch=batch)
    report.build_report(tmp_path / "runs", tmp_path / "out")
    fig = by_title(figures, "BN vs GN by images/worker")
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    for batch in (32, 8, 2):
        bn, gn = lines[f"BN, {batch}/worker"], lines[f"GN, {batch}/worker"]
        assert bn.get_color() == gn.get_color() and bn.get_linestyle() != gn.get_linestyle()
    assert len({lines[f"GN, {b}/worker"].get_color() for b in (32, 8, 2)}) == 3


def test_counts_of_one_are_singular(tmp_path, figures):
    fake_run(tmp_path / "runs", data="digits", norm="gn", batch=2, workers=1, epochs=1)
    report.build_report(tmp_path / "runs", tmp_path / "out")
    fig = by_title(figures, "PROXY: digits")
    assert "1 worker, 1 epoch" in fig.axes[0].get_title()
    assert "(n=1 seed)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0]
    caption = (tmp_path / "out/digits_resnet50_w1_e1/table2_batch_size.md").read_text()
    assert "1 worker, 1 epoch" in caption and "1 workers" not in caption


@pytest.mark.parametrize("status", ["incomplete", "failed", "complete"])
def test_no_matplotlib_warning_whatever_the_runs(tmp_path, status):
    """A group whose only run is still training or failed draws no reproduced curve; an empty
    legend() was a warning on every such report."""
    fake_run(tmp_path / "runs", data="digits", norm="gn", batch=2, status=status)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.build_report(tmp_path / "runs", tmp_path / "out")
