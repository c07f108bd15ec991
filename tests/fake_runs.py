"""Write run folders shaped like the trainer's (summary.json, metrics.jsonl, config.yaml) without
training, so the report and the notebooks can be tested on every table of the paper in seconds."""
from __future__ import annotations

from pathlib import Path

import yaml

from gnrepro.runfiles import write_json, write_jsonl


def fake_run(root: Path, *, data="imagenet", model="resnet50", norm="bn", groups=None, cpg=None, conv="plain",
             batch=32, workers=8, epochs=100, seed=0, error=25.0, status="complete", subset=None,
             eval_stats=None) -> Path:
    if norm == "gn":
        tag = f"gn_c{cpg}" if cpg is not None else f"gn{groups or 32}"
    else:
        tag = norm
    tag += "-precise" if eval_stats == "precise" else ""
    tag += "-ws" if conv == "ws" else ""
    folder = Path(root) / f"{data}_{model}" / f"{tag}_b{batch}x{workers}_e{epochs}_s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    norm_cfg = {"name": norm, **({"groups": groups, "channels_per_group": cpg} if norm == "gn" else {}),
                **({"eval_stats": eval_stats} if eval_stats else {})}
    cfg = {"batch": batch, "workers": workers, "epochs": epochs, "seed": seed, "model": {"name": model},
           "norm": norm_cfg, "conv": {"name": conv}, "data": {"name": data, "subset": subset}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    n = min(epochs, 6)
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_error": error + 20.0 / e,
             "val_loss": 1.0 / e, "val_error": error + 10.0 / e if e < n else error, "images_per_s": 100.0}
            for e in range(1, n + 1)]
    if status == "incomplete":
        write_jsonl(folder / "metrics.jsonl", rows[:2])
        return folder
    write_jsonl(folder / "metrics.jsonl", rows)
    summary = {"status": status, "final_error": error, "val_errors": [r["val_error"] for r in rows],
               "norm": norm, "norm_tag": tag, "conv": conv, "groups": groups, "channels_per_group": cpg,
               "batch": batch, "workers": workers, "model": model, "data": data, "seed": seed, "epochs": epochs}
    if status != "complete":
        summary["final_error"] = None
        summary["error"] = "training loss became nan"
    write_json(folder / "summary.json", summary)
    return folder


def fake_paper(root: Path, seeds=(0, 1)) -> None:
    """Every run of every ImageNet table of the paper, two seeds, errors published + seed/10."""
    for seed in seeds:
        d = seed / 10
        for b in (32, 16, 8, 4, 2):
            fake_run(root, norm="bn", batch=b, seed=seed, error=23.0 + 16 / b + d)
            fake_run(root, norm="gn", batch=b, seed=seed, error=24.0 + d)
        fake_run(root, norm="ln", seed=seed, error=25.0 + d)
        fake_run(root, norm="in", seed=seed, error=28.0 + d)
        for g in (64, 16, 8, 4, 2, 1):
            fake_run(root, norm="gn", groups=g, seed=seed, error=24.5 + d)
        for c in (64, 32, 16, 8, 4, 2, 1):
            fake_run(root, norm="gn", cpg=c, seed=seed, error=24.5 + d)
        for norm in ("bn", "gn"):
            for b in (32, 2):
                fake_run(root, model="resnet101", norm=norm, batch=b, seed=seed, error=22.0 + d)
