"""Sort ImageNet's flat validation folder into ``val/<wnid>/`` so ``data=imagenet`` can read it.

ILSVRC2012_img_val.tar extracts to 50,000 files ``ILSVRC2012_val_00000001.JPEG`` ... in one folder.
The devkit (ILSVRC2012_devkit_t12.tar.gz, from the same download page) gives each file's class:
``data/ILSVRC2012_validation_ground_truth.txt`` holds, on line i, the ILSVRC2012_ID of image i, and
``data/meta.mat`` maps ILSVRC2012_IDs to WordNet IDs (the 1,000 leaf synsets). Alternatively
Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first word is the wnid) works.

Usage:
    python scripts/sort_imagenet_val.py /data/imagenet/val --devkit /data/ILSVRC2012_devkit_t12
    python scripts/sort_imagenet_val.py /data/imagenet/val --devkit /data/ILSVRC2012_devkit_t12.tar.gz
    python scripts/sort_imagenet_val.py /data/imagenet/val --kaggle-csv LOC_val_solution.csv
Add ``--dry-run`` to only print what would move. Files are moved (not copied) within the folder.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tarfile
import tempfile
from pathlib import Path


def devkit_labels(devkit: Path) -> dict[str, str]:
    """``{file name: wnid}`` from the devkit folder (or its .tar.gz)."""
    import scipy.io

    if devkit.is_file():  # the archive: extract the two files we need into a temporary folder
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(devkit) as tar:
            wanted = [m for m in tar.getmembers()
                      if m.name.endswith(("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt"))]
            try:
                tar.extractall(tmp, members=wanted, filter="data")  # refuse links and absolute paths
            except TypeError:  # Python without extraction filters (before 3.10.12 / 3.11.4)
                tar.extractall(tmp, members=wanted)
            return devkit_labels(next(Path(tmp).rglob("meta.mat")).parents[1])
    meta_file = devkit / "data" / "meta.mat"
    truth_file = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    for need in (meta_file, truth_file):
        if not need.is_file():
            raise SystemExit(f"sort_imagenet_val: {need} does not exist; --devkit must be ILSVRC2012_devkit_t12 "
                             f"(the folder or its .tar.gz)")
    synsets = scipy.io.loadmat(str(meta_file), squeeze_me=True)["synsets"]
    # the 1,000 classes are the leaves of the synset tree (no children); IDs 1..1000
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(line) for line in truth_file.read_text().split()]
    return {f"ILSVRC2012_val_{i:08d}.JPEG": id_to_wnid[k] for i, k in enumerate(ids, start=1)}


def kaggle_labels(csv_file: Path) -> dict[str, str]:
    with open(csv_file, newline="") as f:
        return {f"{row['ImageId']}.JPEG": row["PredictionString"].split()[0] for row in csv.DictReader(f)}


def sort_val(val: Path, labels: dict[str, str], dry_run: bool = False) -> int:
    """Move every labelled flat image in ``val`` into ``val/<wnid>/``; returns how many moved."""
    flat = sorted(p for p in val.iterdir() if p.is_file() and p.suffix.lower() == ".jpeg")
    unknown = [p.name for p in flat if p.name not in labels]
    if unknown:
        raise SystemExit(f"sort_imagenet_val: {len(unknown)} files in {val} have no label, e.g. {unknown[0]}; "
                         f"is this ILSVRC2012's val folder?")
    for path in flat:
        target = val / labels[path.name] / path.name
        if dry_run:
            print(f"{path} -> {target}")
        else:
            target.parent.mkdir(exist_ok=True)
            path.rename(target)
    return len(flat)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("val", type=Path, help="the flat val/ folder (ILSVRC2012_img_val.tar extracted)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12 folder or .tar.gz")
    source.add_argument("--kaggle-csv", type=Path, help="Kaggle's LOC_val_solution.csv")
    parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = parser.parse_args(argv)
    if not args.val.is_dir():
        raise SystemExit(f"sort_imagenet_val: {args.val} is not a folder")
    labels = devkit_labels(args.devkit) if args.devkit else kaggle_labels(args.kaggle_csv)
    moved = sort_val(args.val, labels, args.dry_run)
    classes = sum(p.is_dir() for p in args.val.iterdir())
    print(f"{'would move' if args.dry_run else 'moved'} {moved} images"
          + ("" if args.dry_run else f"; {args.val} now has {classes} class folders"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
