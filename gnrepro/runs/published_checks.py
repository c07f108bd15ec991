"""The "published model checks" table: one JSON line per ``python -m gnrepro.evaluate`` run, shown as
Markdown by the evaluator and by ``python -m gnrepro.report``. Reads and writes files only."""
from __future__ import annotations

import math
import os
from pathlib import Path

from gnrepro import runfiles

FOLDER = "published_checks"
LINES = "checks.jsonl"
COLUMNS = [("weights", "weights"), ("data", "data"), ("images", "val images"), ("top1_err", "top-1 err"),
           ("published_top1_err", "published"), ("diff_top1", "difference"), ("top5_err", "top-5 err"),
           ("published_top5_err", "published top-5"), ("crop", "crop"), ("format", "format")]


def append(results_dir, row: dict) -> Path:
    folder = Path(results_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    runfiles.append_jsonl(folder / LINES, row)  # earlier checks stay; a torn last line is skipped by read
    runfiles.write_text(folder / "checks.md", markdown(read(results_dir)))
    return folder / LINES


def read(results_dir) -> list[dict]:
    """The checks, one dict per line; a line that is not a JSON object of finite numbers (one cut by a
    kill, or damaged) is skipped, never shown (issue 24). DamagedFile if the file itself cannot be read
    (a directory, a FIFO, too large)."""
    path = Path(results_dir) / FOLDER / LINES
    if not os.path.lexists(path):
        return []
    rows = []
    for line in runfiles._read_text(path).splitlines():
        try:
            row = runfiles._parse_json(line)
        except ValueError:
            continue  # a line cut by a kill, or a number that is not one: skip it
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _cell(key: str, value) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, float):
        return f"{value:+.2f}" if key.startswith("diff") else f"{value:.2f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    head = ("**Published model checks**: released ImageNet weights converted into gnrepro's ResNet and "
            "evaluated with its transforms (top-1/top-5 val error, %; difference = measured - published). "
            "Rows on data other than ImageNet's full val split are pipeline checks, not comparisons.\n\n")
    lines = ["| " + " | ".join(label for _, label in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(key, r.get(key)) for key, _ in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"
