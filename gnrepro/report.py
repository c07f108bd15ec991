"""Build the paper's tables and figures from run summaries: ``python -m gnrepro.report``.

Reproduces the layout of the Group Normalization paper (Wu & He, ECCV 2018): Table 1 (BN/LN/IN/GN
at 32 images/worker), Table 2 / Figure 1 (error vs images per worker), Table 3 (group division, top
and bottom, also drawn as a plot), the ResNet-101 results of Sec. 4.1, the Figure 4/5-style
error-vs-epoch curves, the blog's Pets GN+WS check, and the rest of Sec. 4.1: Batch Renorm at 4
images/worker, VGG-16 without normalization / BN / GN with Figure 6 (conv5_3's percentiles over
training, from the runs' probe.jsonl), and Figure 1 with a precise-BN curve (Wu & Johnson 2021).
Each table is written as Markdown, CSV and LaTeX with the reproduced mean, std and n over seeds
beside the published value and the difference.

Rules: runs of different data sets, models or protocols (workers, epochs, subset) never share a
table; published numbers are ImageNet's, so on any other data set the table is titled as a PROXY
and the published column is a reference only (no difference is computed); runs that are not
complete are listed, never averaged. This module reads files only and never imports the trainer.
"""
from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from gnrepro.runs import published_checks  # noqa: E402
from gnrepro.errors import EXIT_USER, ArgumentParser, error_line  # noqa: E402
from gnrepro.layers.norm_registry import (  # noqa: E402
    GROUP_OPTIONS,
    NORM_KINDS,
    norm_label,
    norm_tag,
    preset,
)
from gnrepro.engine.probe import FILE as PROBE_FILE  # noqa: E402
from gnrepro.runs.results import PROTOCOL, load_metrics, load_runs  # noqa: E402
from gnrepro.resources import PUBLISHED  # noqa: E402
from gnrepro.text import plural  # noqa: E402
from gnrepro.runfiles import COMPLETE, DAMAGED, DamagedFile, read_jsonl  # noqa: E402

BATCHES = [32, 16, 8, 4, 2]


@dataclass
class Table:
    """One table of the paper: which runs belong to it (norm tag x images per worker), in the
    paper's row order, and which rows of published_results.csv hold its published values."""
    name: str
    title: str
    rows: list[tuple[str, int]]          # (norm_tag, images per worker), in the paper's order
    experiment: str | tuple | None       # the CSV's ``experiment`` column(s); None = nothing published
    setting: str                         # the label of the varied setting's column
    models: tuple[str, ...] | None = None  # only for these models (None: any)
    data: tuple[str, ...] | None = None  # only for these data sets (None: any)
    label: dict = field(default_factory=dict)  # norm_tag -> row label
    requires: str | None = None          # written only where runs with this norm tag exist
    pretrained: bool = False             # runs fine-tuned from released weights (init=...) or from scratch


TABLES = [
    Table("table1_norms", "Table 1: BN, LN, IN and GN at 32 images per worker",
          [(t, 32) for t in ("bn", "ln", "in", "gn32")], "norms_at_32", "norm"),
    Table("table2_batch_size", "Table 2 / Figure 1: error vs images per worker",
          [(t, b) for t in ("bn", "gn32") for b in BATCHES], "batch_size", "images/worker"),
    Table("table3_groups", "Table 3 (top): GN with G groups, 32 images per worker",
          [(f"gn{g}", 32) for g in (64, 32, 16, 8, 4, 2, 1)], "groups", "groups G"),
    Table("table3_channels", "Table 3 (bottom): GN with C/G channels per group, 32 images per worker",
          [(f"gn_c{c}", 32) for c in (64, 32, 16, 8, 4, 2, 1)], "channels_per_group", "channels per group"),
    Table("resnet101", "Sec. 4.1: ResNet-101, BN vs GN at 32 and 2 images per worker",
          [(t, b) for b in (32, 2) for t in ("bn", "gn32")], "resnet101", "images/worker", models=("resnet101",)),
    Table("pets_ws", "Pets (blog): BN, GN and GN+WS at 4 and 1 images per step",
          [(t, b) for t in ("bn", "gn32", "gn32-ws") for b in (4, 1)], None, "images/worker", data=("pets",)),
    Table("batch_renorm", "Sec. 4.1: BN, Batch Renorm (r_max 1.5, d_max 0.5) and GN at 4 images per worker",
          [(t, 4) for t in ("bn", "brn", "gn32")], ("batch_size", "batch_renorm"), "norm", requires="brn"),
    Table("vgg16", "Sec. 4.1: VGG-16 without normalization, with BN and with GN at 32 images per worker",
          [(t, 32) for t in ("none", "bn", "gn32")], "vgg16", "norm", models=("vgg16",)),
    Table("fig1_precise_bn", "Figure 1 with precise BN: BN evaluated with population statistics",
          [(t, b) for t in ("bn", "bn-precise", "gn32") for b in BATCHES], "batch_size", "images/worker",
          requires="bn-precise"),
    Table("pets_transfer", "Pets transfer: fine-tuned from released ImageNet models at 4 and 1 images per step",
          [(t, b) for t in ("bn", "frozenbn", "gn32", "gn32-ws") for b in (4, 1)], None, "images/worker",
          data=("pets",), pretrained=True),
]


def published_tag(row) -> str:
    """The run's norm tag for a row of published_results.csv, whose ``norm`` is a norm= choice."""
    norm, conv = preset(row.norm)
    if NORM_KINDS[norm["name"]].grouped:
        for key in GROUP_OPTIONS:
            value = getattr(row, key)
            norm[key] = None if pd.isna(value) else int(value)
    return norm_tag(norm, {"name": conv})


def load_published(path: Path = PUBLISHED) -> pd.DataFrame:
    df = pd.read_csv(path)
    df["norm_tag"] = [published_tag(r) for r in df.itertuples()]
    return df


def reference_model(pub: pd.DataFrame, model: str) -> str:
    """The paper's model a run is compared with: its own where the paper has it (ResNet-50/101),
    else ResNet-50, the paper's model for every table (a proxy's reduced-depth ResNet-26/14)."""
    return model if model in set(pub.model) else "resnet50"


def published_value(pub: pd.DataFrame, table: Table, model: str, tag: str, batch: int) -> float | None:
    """The paper's ImageNet number for this cell, matched on (model, norm, groups or C/G, images/worker);
    ``model`` is the paper's (``reference_model``)."""
    if table.experiment is None:
        return None
    experiments = [table.experiment] if isinstance(table.experiment, str) else list(table.experiment)
    hit = pub[pub.experiment.isin(experiments) & (pub.dataset == "imagenet") & (pub.model == model)
              & (pub.norm_tag == tag) & (pub.images_per_worker == batch)]
    return float(hit.top1_error_pct.iloc[0]) if len(hit) else None


def setting_value(table: Table, tag: str, batch: int) -> int:
    """The value of the table's varied setting: G, channels per group, or images per worker."""
    if table.name == "table3_groups":
        return int(tag[2:])
    if table.name == "table3_channels":
        return int(tag[4:])
    return batch


def is_proxy(data: str) -> bool:
    return data != "imagenet"


def protocol_name(key: dict) -> str:
    """Folder name of one (data, model, protocol) group, e.g. ``digits_resnet50_w1_e8_sub384``."""
    name = f"{key['data']}_{key['model']}_w{key['workers']}_e{key['epochs']}"
    if key["subset"] not in ("-", None):
        name += f"_sub{key['subset']}"
    if key.get("pretrained"):
        name += "_finetuned"
    if key.get("precision", "fp32") != "fp32":  # bf16/fp16 runs: never in an fp32 table (gnrepro.runs.identity)
        name += f"_{key['precision']}"
    if key.get("protocol"):  # a non-paper optimizer or non-proxy data protocol (gnrepro.runs.identity.protocol_hash)
        name += f"_{key['protocol']}"
    return name


def build_table(table: Table, runs: pd.DataFrame, pub: pd.DataFrame, key: dict) -> pd.DataFrame | None:
    """Rows of ``table`` for one protocol group: reproduced mean/std/n over complete seeds, published
    value and difference (ImageNet) or the published ImageNet value as a reference only (proxy)."""
    if table.models and key["model"] not in table.models or table.data and key["data"] not in table.data:
        return None
    if table.requires and table.requires not in set(runs.norm_tag):
        return None
    if table.pretrained != bool(key.get("pretrained", False)):
        return None
    proxy = is_proxy(key["data"])
    pub_col = "published ImageNet (reference only)" if proxy else "published"
    paper_model = reference_model(pub, key["model"])
    out = []
    for tag, batch in table.rows:
        sel = runs[(runs.norm_tag == tag) & (runs.batch == batch)]
        done = sel[sel.status == COMPLETE].final_error.astype(float)
        if sel.empty:
            continue
        mean = done.mean() if len(done) else math.nan
        std = done.std(ddof=1) if len(done) > 1 else math.nan
        p = published_value(pub, table, paper_model, tag, batch)
        row = {"norm": norm_label(tag)}
        if table.setting != "norm":
            row[table.setting] = setting_value(table, tag, batch)
        row.update({"reproduced mean": mean, "std": std, "n": len(done),
                    pub_col: p if p is not None else math.nan})
        if not proxy:
            row["difference"] = mean - p if p is not None else math.nan
        row["not complete"] = int((sel.status != COMPLETE).sum())
        out.append(row)
    return pd.DataFrame(out) if out else None


def caption(table: Table, key: dict, pub: pd.DataFrame) -> str:
    proto = f"{plural(key['workers'], 'worker')}, {plural(key['epochs'], 'epoch')}" + (
        f", {key['subset']}-image train subset" if key["subset"] not in ("-", None) else "")
    head = f"{table.title} -- {key['model']}, {key['data']}, {proto}"
    if is_proxy(key["data"]):
        return (f"PROXY ({key['data']}), not ImageNet. {head}. Top-1 val error (%), median of the final "
                "epochs, mean/std over seeds. The published column is the paper's ImageNet number "
                f"({reference_model(pub, key['model'])}), a reference for the trend only; the values are not comparable.")
    return f"{head}. Top-1 val error (%), median of the final 5 epochs, mean/std over seeds; difference = reproduced - published."


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency); numbers to 2 decimals, missing as an en dash."""
    def cell(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.2f}"
        return "–" if v is None else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_table(df: pd.DataFrame, cap: str, stem: Path) -> None:
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.2f")
    stem.with_suffix(".md").write_text(f"**{cap}**\n\n" + markdown(df) + "\n")
    latex = df.to_latex(index=False, float_format="%.2f", na_rep="--", caption=cap, label=f"tab:{stem.name}")
    stem.with_suffix(".tex").write_text(latex)


def _mean_std(runs: pd.DataFrame, tag: str) -> pd.DataFrame:
    sel = runs[(runs.norm_tag == tag) & (runs.status == COMPLETE)]
    return sel.groupby("batch").final_error.agg(["mean", "std", "count"]).reindex(
        [b for b in BATCHES if b in set(sel.batch)])


def _n_range(counts) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def plot_figure1(runs: pd.DataFrame, pub: pd.DataFrame, key: dict, path: Path) -> None:
    """Figure 1: error vs images per worker for BN and GN (reproduced), the published curves beside."""
    proxy = is_proxy(key["data"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for tag, color in (("bn", "tab:blue"), ("gn32", "tab:red"), ("bn-precise", "tab:green")):
        stats = _mean_std(runs, tag)
        if len(stats):
            axes[0].errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", color=color,
                             capsize=3, label=f"{norm_label(tag)} (n={_n_range(stats['count'])} "
                                                   f"{'seed' if stats['count'].max() == 1 else 'seeds'})")
        if tag == "bn-precise":
            continue  # not in the paper: drawn only where reproduced
        p = pub[(pub.experiment == "batch_size") & (pub.model == "resnet50") & (pub.norm_tag == tag)]
        axes[1].plot(p.images_per_worker, p.top1_error_pct, marker="s", ls="--", color=color, label=norm_label(tag))
    where = f"PROXY: {key['data']}, not ImageNet" if proxy else "reproduced, ImageNet"
    axes[0].set_title(f"{where}\n{key['model']}, {plural(key['workers'], 'worker')}, {plural(key['epochs'], 'epoch')}",
                      fontsize=9)
    axes[1].set_title("published (paper Figure 1), ResNet-50 on ImageNet, 8 workers", fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.set_xlabel("images per worker")
        ax.set_ylabel("top-1 val error (%)")
        ax.grid(alpha=0.3)
        _legend(ax)
    axes[0].invert_xaxis()  # the paper draws 32 on the left; once only, the x axis is shared
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _legend(ax, **kwargs) -> None:
    """A legend where something is labelled: a group whose runs are all partial or failed draws no
    reproduced curve, and an empty legend() is a matplotlib warning on every report."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def plot_table3(df: pd.DataFrame, table: Table, key: dict, path: Path) -> None:
    """Table 3 as a plot: error vs groups (or channels per group), reproduced and published."""
    pub_col = [c for c in df.columns if c.startswith("published")][0]
    x = [int(v) for v in df[table.setting]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(x, df["reproduced mean"], yerr=df["std"].fillna(0), marker="o", capsize=3,
                label="reproduced" + (f" (PROXY: {key['data']})" if is_proxy(key["data"]) else ""))
    # one shared, labelled y axis: on a second axis of its own, the published curve (flat within 0.6
    # points but G = 1) was stretched to the plot's height and looked like large swings
    ax.plot(x, df[pub_col], marker="s", ls="--", color="gray", label="published (ImageNet)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel(table.setting)
    ax.set_ylabel("top-1 val error (%)")
    ax.set_title(f"{table.title.split(':')[0]}: {key['model']}, {key['data']}", fontsize=9)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(runs: pd.DataFrame, tags: list[str], batches: list[int], key: dict, path: Path, title: str) -> bool:
    """Figure 4/5 style: train and val error vs epoch, mean over complete seeds, one line per setting.
    One colour per batch size and one line style per norm (GN solid, BN dashed; Figure 4: one colour
    per norm), so BN and GN at the same batch size read as a pair."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    drawn = False
    palette = plt.get_cmap("tab10").colors
    styles = {"gn32": "-", "bn": "--", "ln": "-.", "in": ":"}
    for t, tag in enumerate(tags):
        for b, batch in enumerate(batches):
            sel = runs[(runs.norm_tag == tag) & (runs.batch == batch) & (runs.status == COMPLETE)]
            if sel.empty:
                continue
            curves = pd.concat([load_metrics(f).set_index("epoch")[["train_error", "val_error"]] for f in sel.folder])
            mean = curves.groupby(level=0).mean()
            label = norm_label(tag) + (f", {batch}/worker" if len(batches) > 1 else "")
            color = palette[(b if len(batches) > 1 else t) % len(palette)]
            for ax, col in zip(axes, ("train_error", "val_error")):
                ax.plot(mean.index, mean[col], label=label, color=color, ls=styles.get(tag, "-"))
            drawn = True
    if drawn:
        where = f"PROXY ({key['data']}, not ImageNet)" if is_proxy(key["data"]) else key["data"]
        for ax, name in zip(axes, ("train error", "val error")):
            ax.set_title(f"{name}: {title}, {where}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("top-1 error (%)")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def plot_feature_distribution(runs: pd.DataFrame, key: dict, path: Path) -> bool:
    """Figure 6: one panel per norm, a probed layer's 1/20/80/99 percentiles vs training iterations
    (bands p1-p99 and p20-p80, as the paper draws them), from the lowest seed probed per norm."""
    order = [t for t in ("none", "bn", "gn32") if t in set(runs.norm_tag)]
    order += sorted(set(runs.norm_tag) - set(order))
    panels = []
    for tag in order:
        for folder in runs[runs.norm_tag == tag].sort_values("seed").folder:
            if (Path(folder) / PROBE_FILE).is_file():
                try:
                    rows = read_jsonl(Path(folder) / PROBE_FILE, index="step")
                except DamagedFile as err:  # drawn from the next seed instead; the damage is named
                    print(f"damaged, not drawn: {err.path} ({err.reason})")
                    continue
                if rows:
                    panels.append((tag, pd.DataFrame(rows)))
                    break
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (tag, df) in zip(axes[0], panels):
        cols = sorted((c for c in df.columns if c[0] == "p" and c[1:].replace(".", "").isdigit()),
                      key=lambda c: float(c[1:]))
        for i in range(len(cols) // 2):  # nested bands, outermost pair (p1-p99) lightest
            low, high = cols[i], cols[-1 - i]
            ax.fill_between(df.step, df[low], df[high], color="tab:blue", alpha=0.25 + 0.35 * i, lw=0,
                            label=f"{low[1:]}-{high[1:]} percentile")
        ax.set_title(f"{key['model']}, {norm_label(tag)}", fontsize=9)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    layer = panels[0][1].layer.iloc[0]
    axes[0][0].set_ylabel(f"{layer} responses")
    axes[0][0].legend(fontsize=7, loc="upper left")
    where = f"PROXY ({key['data']}, not ImageNet)" if is_proxy(key["data"]) else key["data"]
    fig.suptitle(f"Figure 6: feature distribution of {layer} during training, {where}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_report(results_dir: str | Path, out_dir: str | Path, published: Path = PUBLISHED) -> list[Path]:
    """Write every table and figure that the runs under ``results_dir`` allow; returns the files."""
    runs = load_runs(results_dir)
    pub = load_published(published)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = ["# Reproduced results", "", f"Built by `python -m gnrepro.report` from `{results_dir}`.", ""]
    if runs.empty:
        index.append("No runs found.")
    # A damaged folder whose settings cannot be read (no config, no summary) belongs to no table: listed apart.
    unknown = runs[runs[PROTOCOL[:4]].isna().any(axis=1)]
    runs = runs.drop(unknown.index)
    if len(unknown):
        (out_dir / "unreadable.md").write_text("Run folders whose settings cannot be read (listed, not averaged):\n\n"
                                               + markdown(unknown[["folder", "status", "error"]]) + "\n")
        written.append(out_dir / "unreadable.md")
        index += [f"- {len(unknown)} run folder(s) whose settings cannot be read: [list](unreadable.md)", ""]
    for values, group in runs.groupby(PROTOCOL, dropna=False, sort=True):
        key = dict(zip(PROTOCOL, values))
        gdir = out_dir / protocol_name(key)
        gdir.mkdir(parents=True, exist_ok=True)
        index += [f"## {protocol_name(key)}" + ("  (PROXY, not ImageNet)" if is_proxy(key["data"]) else ""), ""]
        for table in TABLES:
            df = build_table(table, group, pub, key)
            if df is None:
                continue
            stem = gdir / table.name
            write_table(df, caption(table, key, pub), stem)
            written += [stem.with_suffix(s) for s in (".md", ".csv", ".tex")]
            index.append(f"- [{table.title}]({gdir.name}/{table.name}.md)")
            if table.name.startswith("table3") and df["reproduced mean"].notna().any():
                plot_table3(df, table, key, stem.with_suffix(".png"))
                written.append(stem.with_suffix(".png"))
            if table.name == "table2_batch_size":
                plot_figure1(group, pub, key, gdir / "fig1_batch_size.png")
                written.append(gdir / "fig1_batch_size.png")
                index.append(f"- Figure 1: ![]({gdir.name}/fig1_batch_size.png)")
                if plot_curves(group, ["bn", "gn32"], BATCHES, key, gdir / "fig5_curves.png",
                               "BN vs GN by images/worker"):
                    written.append(gdir / "fig5_curves.png")
            if table.name == "table1_norms":
                if plot_curves(group, ["bn", "ln", "in", "gn32"], [32], key, gdir / "fig4_curves.png",
                               "32 images/worker"):
                    written.append(gdir / "fig4_curves.png")
        if plot_feature_distribution(group, key, gdir / "fig6_feature_distribution.png"):
            written.append(gdir / "fig6_feature_distribution.png")
            index.append(f"- Figure 6: ![]({gdir.name}/fig6_feature_distribution.png)")
        bad = group[group.status != COMPLETE]
        if len(bad):
            cols = ["folder", "status", "norm_tag", "batch", "seed", "epochs_done", "error"]
            (gdir / "not_complete.md").write_text(
                "Runs that are not complete (listed, not averaged):\n\n" + markdown(bad[cols]) + "\n")
            written.append(gdir / "not_complete.md")
            index.append(f"- {plural(len(bad), 'run')} not complete, not averaged: [list]({gdir.name}/not_complete.md)")
        index.append("")
    try:
        checks = published_checks.read(results_dir)
    except DamagedFile as err:
        print(f"damaged, not shown: {err.path} ({err.reason})")
        checks = []
    if checks:
        (out_dir / "published_model_checks.md").write_text(published_checks.markdown(checks))
        written.append(out_dir / "published_model_checks.md")
        index += ["## Published model checks", "", "- [released models evaluated by gnrepro](published_model_checks.md)", ""]
    (out_dir / "index.md").write_text("\n".join(index) + "\n")
    written.append(out_dir / "index.md")
    return written


def check_folders(runs: Path, out: Path) -> None:
    """One line for a --runs that is not a folder or an --out that cannot be one."""
    if not runs.is_dir():
        raise ValueError(f"--runs {runs} is not a folder; point it at the folder holding the run folders "
                         f"(the trainer's results_dir)")
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out} cannot be a folder: {existing} is a file; choose another --out")
    try:  # a read-only place (or /proc): one line now, not a traceback half-way through the tables
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ValueError(f"--out {out} is not writable ({err.strerror} in {existing}); choose another --out") from None


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m gnrepro.report", description=__doc__.splitlines()[0])
    # Defaults: the trainer's results_dir and a folder beside it, both ignored by git. The committed
    # proxy report is rebuilt only when asked: --runs results/runs --out results/reports.
    ap.add_argument("--runs", default="outputs/runs", help="folder holding the run folders (default outputs/runs)")
    ap.add_argument("--out", default="outputs/reports", help="where tables and figures go (default outputs/reports)")
    args = ap.parse_args(argv)
    try:
        check_folders(Path(args.runs), Path(args.out))
    except ValueError as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_USER
    files = build_report(args.runs, args.out)
    for row in load_runs(args.runs).query(f"status == '{DAMAGED}'").itertuples():
        print(f"damaged, not averaged: {row.folder} ({row.error})")
    print(f"wrote {len(files)} files under {args.out}; index: {Path(args.out) / 'index.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
