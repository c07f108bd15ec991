"""Load what training runs left on disk, for the report (paper Sec. 4.1: the reported number is the
median val error of the final 5 epochs, already in each run's summary.json). Reads files only: it
never imports the trainer, so a report can be built anywhere the run folders are copied."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gnrepro.config import norm_tag
from gnrepro.runfiles import CONFIG, METRICS, SUMMARY, DamagedFile, read_config, read_jsonl, read_summary_file

# Columns that define a run's protocol: runs differing in any of them never share a table.
# ``pretrained``: fine-tuned from released weights (init=...), never mixed with runs from scratch.
PROTOCOL = ["data", "model", "workers", "epochs", "subset", "image_size", "pretrained"]


def _config(folder: Path) -> dict:
    path = folder / CONFIG
    if not path.is_file():
        path = folder / ".hydra" / "config.yaml"  # Hydra's copy, written before training starts
    return read_config(path) if path.is_file() else {}


def _read(folder: Path) -> tuple[dict, dict, list, str | None]:
    """(config, summary, metrics, why the folder is damaged or None); a damaged file never raises."""
    cfg, summary, metrics, damage = {}, {}, [], None
    for name, read in ((CONFIG, _config), (SUMMARY, None), (METRICS, None)):
        try:
            if name == CONFIG:
                cfg = read(folder)
            elif name == SUMMARY and (folder / SUMMARY).is_file():
                summary = read_summary_file(folder / SUMMARY)
            elif name == METRICS and (folder / METRICS).is_file():
                metrics = read_jsonl(folder / METRICS)
        except DamagedFile as err:
            damage = damage or f"{err.path.name}: {err.reason}"
    return cfg, summary, metrics, damage


def _tag_from_config(cfg: dict) -> str:
    return norm_tag(cfg.get("norm", {}), cfg.get("conv", {}))


def load_runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run folder under ``results_dir`` (any depth): its settings, status and result.

    status is the summary's ("complete", "failed", ...) or, without a summary, "incomplete" (metrics
    written but no summary: interrupted or still running) or "pending" (only the config so far), or
    "damaged" when one of its files does not parse (the reason is in ``error``).
    """
    rows = []
    for folder in sorted({p.parent for pattern in (SUMMARY, METRICS, CONFIG)
                          for p in Path(results_dir).rglob(pattern) if p.parent.name != ".hydra"}):
        cfg, summary, metrics, damage = _read(folder)
        if damage:  # listed with the reason, never averaged
            summary = {**summary, "status": "damaged", "error": damage}
        data = cfg.get("data", {}) if isinstance(cfg.get("data"), dict) else {}
        row = {
            "folder": str(folder),
            "status": summary.get("status", "incomplete" if metrics else "pending"),
            "data": summary.get("data", data.get("name")),
            "model": summary.get("model", cfg.get("model", {}).get("name")),
            "norm": summary.get("norm", cfg.get("norm", {}).get("name")),
            "norm_tag": summary.get("norm_tag") or _tag_from_config(cfg),
            "batch": summary.get("batch", cfg.get("batch")),
            "workers": summary.get("workers", cfg.get("workers")),
            "epochs": summary.get("epochs", cfg.get("epochs")),
            "seed": summary.get("seed", cfg.get("seed")),
            "subset": data.get("subset"),
            "image_size": data.get("image_size"),
            "pretrained": bool(summary.get("init", cfg.get("init"))),
            "final_error": summary.get("final_error") if summary.get("status") == "complete" else None,
            "epochs_done": len(metrics),
            "error": summary.get("error"),
        }
        rows.append(row)
    columns = ["folder", "status", *PROTOCOL[:2], "norm", "norm_tag", "batch", *PROTOCOL[2:4], "seed",
               *PROTOCOL[4:], "final_error", "epochs_done", "error"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("subset", "image_size"):  # absent for data sets without them: one value, not NaN
        df[col] = df[col].astype(object).where(df[col].notna(), "-")
    return df


def load_metrics(folder: str | Path) -> pd.DataFrame:
    """The per-epoch metrics of one run (epoch, lr, train/val loss and error, images/s)."""
    return pd.DataFrame(read_jsonl(Path(folder) / METRICS))
