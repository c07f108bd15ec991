"""Re-evaluate the digits proxy's finished runs on an augmented copy of the val split.

Why (issue 10): the proxy trains on warped, noised digits but validates on clean ones, so val error
(3-5%) sits far below train error (8-14%), the reverse of ImageNet, whose val images look like its
training crops. Gaps between norms are squeezed against that floor. This script measures what the
same checkpoints give when the val images get the training augmentation too
(``data.augment_val=<draws>``: fixed draws, the same for every run, so runs are compared on
identical images). It reads each run's ``last.pt`` (the final epoch's weights, not the
median of the final epochs the report uses) and builds everything with gnrepro's own code.

    python scripts/proxy_augmented_val.py results/runs/digits_resnet26 --out augmented_val.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnrepro.models.build import build_model  # noqa: E402
from gnrepro.data import digits  # noqa: E402
from gnrepro.engine.loop import evaluate  # noqa: E402
from gnrepro.runfiles import load_checkpoint, read_config  # noqa: E402


def val_splits(data_cfg, draws: int) -> list[TensorDataset]:
    """The clean val split and the one ``data.augment_val=draws`` gives. Both depend on the data
    config only (the copies are drawn from a fixed seed), never on the run's seed."""
    return [digits.build(data_cfg).val, digits.build(OmegaConf.merge(data_cfg, {"augment_val": draws})).val]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of digits proxy run folders (with last.pt)")
    parser.add_argument("--draws", type=int, default=4, help="augmented copies of each val image (default 4)")
    parser.add_argument("--out", type=Path, help="write the per-run table as CSV here")
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.runs.glob("*/last.pt"))
    if not folders or args.draws < 1:
        parser.error(f"no run folder with last.pt under {args.runs}" if not folders else "--draws must be >= 1")
    rows, val_sets = [], {}  # data config (as YAML) -> its val splits, built once for all runs sharing it
    for folder in folders:
        cfg = OmegaConf.create(read_config(folder / "config.yaml"))
        if cfg.data.name != "digits" or cfg.data.get("augment") is None:
            continue
        key = OmegaConf.to_yaml(cfg.data)
        if key not in val_sets:
            val_sets[key] = val_splits(cfg.data, args.draws)
        sets = val_sets[key]
        model = build_model(cfg, digits.NUM_CLASSES, 1, workers=cfg.workers)
        model.load_state_dict(load_checkpoint(folder / "last.pt")["model"])
        errors = [evaluate(model, DataLoader(s, batch_size=512), "cpu")["val_error"] for s in sets]
        rows.append({"run": folder.name, "norm": folder.name.split("_")[0], "batch": cfg.batch, "seed": cfg.seed,
                     "epochs": cfg.epochs, "clean_val_error": errors[0], "augmented_val_error": errors[1]})
        print(f"{folder.name}: clean {errors[0]:.2f}%  augmented {rows[-1]['augmented_val_error']:.2f}%", flush=True)
    table = pd.DataFrame(rows)
    means = table.groupby(["epochs", "norm", "batch"])[["clean_val_error", "augmented_val_error"]].mean().round(2)
    print(means.unstack("norm").sort_index(ascending=[True, False]).to_string())
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.3f")


if __name__ == "__main__":
    main()
