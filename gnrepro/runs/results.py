"""Load what training runs left on disk, for the report (paper Sec. 4.1: the reported number is the
median val error of the final 5 epochs, already in each run's summary.json). Reads files only: it
never imports the trainer, so a report can be built anywhere the run folders are copied."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gnrepro import runfiles
from gnrepro.runs.identity import GROUP_COLUMNS, protocol_hash
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.runfiles import CONFIG, METRICS, SUMMARY, DamagedFile, read_config, read_jsonl

# Columns that define a run's protocol: runs differing in any of them never share a table
# (gnrepro.runs.identity). ``pretrained``: fine-tuned from released weights (init=...), never mixed with
# runs from scratch; ``protocol``: the hash of a non-paper optimizer protocol ("" for the paper's).
PROTOCOL = GROUP_COLUMNS


def _config(folder: Path) -> dict:
    path = folder / CONFIG
    if not path.is_file():
        path = folder / ".hydra" / "config.yaml"  # Hydra's copy, written before training starts
    return read_config(path) if path.is_file() else {}


def _read(folder: Path) -> tuple[dict, runfiles.RunStatus, list]:
    """(config, status, metrics); a damaged file never raises: the status says which and why."""
    cfg, metrics, damage = {}, [], None
    try:
        cfg = _config(folder)
    except DamagedFile as err:
        damage = f"{err.path.name}: {err.reason}"
    status = runfiles.run_status(folder)
    try:
        metrics = read_jsonl(folder / METRICS) if (folder / METRICS).is_file() else []
    except DamagedFile as err:
        damage = damage or status.reason or f"{err.path.name}: {err.reason}"
    if damage:  # listed with the reason, never averaged
        status = runfiles.RunStatus(runfiles.DAMAGED, status.summary, damage)
    return cfg, status, metrics


def _tag_from_config(cfg: dict) -> str:
    return norm_tag(cfg.get("norm", {}), cfg.get("conv", {}))


def load_runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run folder under ``results_dir`` (any depth): its settings, status and result.

    status is gnrepro.runfiles.run_status's (complete, failed, partial, pending), or damaged when
    any of its files does not parse (the reason is in ``error``).
    """
    rows = []
    for folder in sorted({p.parent for pattern in (SUMMARY, METRICS, CONFIG)
                          for p in Path(results_dir).rglob(pattern) if p.parent.name != ".hydra"}):
        cfg, status, metrics = _read(folder)
        summary = status.summary or {}
        data = cfg.get("data", {}) if isinstance(cfg.get("data"), dict) else {}
        row = {
            "folder": str(folder),
            "status": status.status,
            "data": summary.get("data", data.get("name")),
            "model": summary.get("model", cfg.get("model", {}).get("name")),
            "norm": summary.get("norm", cfg.get("norm", {}).get("name")),
            "norm_tag": summary.get("norm_tag") or _tag_from_config(cfg),
            "batch": summary.get("batch", cfg.get("batch")),
            "workers": summary.get("workers", cfg.get("workers")),
            "epochs": summary.get("epochs", cfg.get("epochs")),
            "seed": summary.get("seed", cfg.get("seed")),
            # an integer: a float (64.0, from a sweep or pandas) would name a report folder sub64.0
            "subset": int(data["subset"]) if data.get("subset") is not None else None,
            "image_size": data.get("image_size"),
            "pretrained": bool(summary.get("init", cfg.get("init"))),
            "precision": cfg.get("precision", "fp32"),
            "protocol": protocol_hash(cfg.get("optim"), data),
            "final_error": summary.get("final_error") if status.status == runfiles.COMPLETE else None,
            "epochs_done": len(metrics),
            "error": status.reason or summary.get("error"),
        }
        rows.append(row)
    columns = ["folder", "status", *PROTOCOL[:2], "norm", "norm_tag", "batch", *PROTOCOL[2:4], "seed",
               *PROTOCOL[4:], "final_error", "epochs_done", "error"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("subset", "image_size"):  # absent for data sets without them: one value, not NaN
        # from the rows, not df[col]: pandas stores ints mixed with None as floats (64 -> 64.0)
        values = pd.Series([row[col] for row in rows], index=df.index, dtype=object)
        df[col] = values.where(values.notna(), "-")
    return df


def load_metrics(folder: str | Path) -> pd.DataFrame:
    """The per-epoch metrics of one run (epoch, lr, train/val loss and error, images/s)."""
    return pd.DataFrame(read_jsonl(Path(folder) / METRICS))
