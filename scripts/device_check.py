"""The device check: the first thing to run on a GPU machine (docs/gpu.md), one GPU, at most 8 minutes
(``--budget``). It runs the CUDA-only tests (``pytest -m cuda``) and the benchmarks that decide the
recommended settings, and writes one report, Markdown and CSV, under ``results/device/<gpu name>/``:

1. the CUDA-only tests: fp32 is IEEE float32 (TF32 off), CUDA graphs train BN/GN/GN+WS at 2 images
   per worker like eager steps, nvJPEG decoding, norms that keep channels_last;
2. Figure 1's smallest batch: 2 images x 8 workers on one device, eager vs CUDA graphs (reduce-overhead);
3. ResNet-50 training steps at 64 images: BN, GN, GN+WS x fp32, tf32, bf16 x NCHW, channels_last,
   eager (ratios to fp32/NCHW/eager, GN/BN), and the trainer fed by its real loader on synthetic JPEGs;
4. the input pipeline: data.loader = pil, pil_uint8, gpu on synthetic ImageNet-sized JPEGs;
5. torch.compile at 64 images (bf16, channels_last) for BN and GN.

    python scripts/device_check.py                      # all of it, writes results/device/<gpu>/
    python scripts/device_check.py --budget 300         # the whole check in at most 300 s

Each section runs as its own process under a time limit, cut to what is left of the budget, so the
check ends within the budget; a section that fails or is stopped is reported as such, keeps the rows
it printed, and the others still run. The report is rewritten after every section (an interrupted
check leaves the sections it finished) and ends with the recommended settings, each read off the
rows beside it. Without a CUDA GPU it says so in one line, writes nothing and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gnrepro import runfiles  # noqa: E402
BENCH = [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), "--device", "cuda", "--model", "resnet50"]
FASTER = 1.05  # a setting is recommended when it is at least this much faster for every norm measured


@dataclass
class Section:
    title: str
    command: list
    limit: float  # seconds; cut to what is left of the budget
    batch: int = 0  # images per worker of the timed rows (0: the section times no training step)


SECTIONS = [  # in the order of what the recommendations need most
    Section("CUDA-only tests", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                                str(ROOT / "tests")], 150),
    Section("Figure 1's smallest batch: 2 images x 8 workers, eager vs CUDA graphs",
            BENCH + ["--batch", "2", "--workers", "8", "--norms", "bn", "gn", "--precisions", "fp32", "--layouts",
                     "nchw", "--modes", "eager", "reduce-overhead", "--steps", "50", "--warmup", "10"], 180, 2),
    Section("ResNet-50 at 64 images: norms x precision x layout, eager; end to end",
            BENCH + ["--batch", "64", "--norms", "bn", "gn", "gn_ws", "--precisions", "fp32", "tf32", "bf16",
                     "--layouts", "nchw", "channels_last", "--modes", "eager", "--steps", "30", "--warmup", "5",
                     "--end-to-end", "1024"], 150, 64),
    Section("Input pipeline: data.loader = pil, pil_uint8, gpu (and NVIDIA DALI's pipeline, the anchor, if installed)",
            [sys.executable, str(ROOT / "scripts" / "bench_input_pipeline.py"), "--fake-images", "1024", "--steps",
             "10", "--loaders", "pil,pil_uint8,gpu", "device=cuda", "batch=64", "data.num_workers=8"]
            + (["--dali"] if importlib.util.find_spec("nvidia.dali") else []), 90),
    Section("ResNet-50 at 64 images: torch.compile (bf16, channels_last)",
            BENCH + ["--batch", "64", "--norms", "bn", "gn", "--precisions", "bf16", "--layouts", "channels_last",
                     "--modes", "eager", "default", "--steps", "30", "--warmup", "10"], 180, 64),
]
# one timed row of scripts/bench_throughput.py: norm, workers, precision, layout, mode, images/s, ratio, graphs
ROW = re.compile(r"^(\w+)\s+(\d+)\s+(fp32|tf32|bf16|fp16)\s+(nchw|channels_last)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+(\d+)$",
                 re.M)
LOADER = re.compile(r"^data\.loader=(\w+)\s+:\s+([\d.]+) images/s", re.M)
TO_DALI = re.compile(r"^data\.loader=gpu / DALI = ([\d.]+)", re.M)
OVERLAP = re.compile(r"^overlap: .*both/min\(alone\) = ([\d.]+)", re.M)
FIELDS = ["section", "batch", "norm", "workers", "precision", "layout", "mode", "images_per_s", "ratio", "graphs"]
SETTING = FIELDS[:7]  # what a timed row was measured at (the rest is what was measured)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def parse_rows(text: str, section: Section) -> list[dict]:
    return [{"section": section.title, "batch": section.batch, "norm": m[0], "workers": int(m[1]), "precision": m[2],
             "layout": m[3], "mode": m[4], "images_per_s": float(m[5]), "ratio": m[6], "graphs": int(m[7])}
            for m in ROW.findall(text)]


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended on its own meanwhile
        os.killpg(proc.pid, signal.SIGKILL)


def _ratios(rows, key: str, base: str, other: str, **where) -> dict[str, float]:
    """images/s of ``key=other`` over ``key=base`` per norm, the other fields equal (the median over
    the pairs a norm has)."""
    rate = {tuple(r[k] for k in SETTING): r["images_per_s"] for r in rows if all(r[k] == v for k, v in where.items())}
    i, norm = SETTING.index(key), SETTING.index("norm")
    pairs: dict[str, list[float]] = {}
    for k, value in rate.items():
        if k[i] == other:
            twin = k[:i] + (base,) + k[i + 1:]
            if twin in rate:
                pairs.setdefault(k[norm], []).append(value / rate[twin])
    return {norm: statistics.median(r) for norm, r in pairs.items()}


def _verdict(what: str, ratios: dict[str, float], yes: str, no: str) -> str:
    if not ratios:
        return f"- {what}: not measured (its section did not run or printed no rows)"
    shown = ", ".join(f"{norm} {r:.2f}x" for norm, r in sorted(ratios.items()))
    return f"- {what}: {shown} -> " + (yes if min(ratios.values()) >= FASTER else no)


def recommendations(rows: list[dict], loaders: dict[str, float], overlap: float | None,
                    to_dali: float | None = None) -> list[str]:
    """The settings the docs recommend, each decided by the measured ratio printed beside it."""
    small = dict(batch=2, workers=8)
    lines = ["## Recommended settings (read off the rows above)", "",
             _verdict("`compile=reduce-overhead` (CUDA graphs) over eager at 2 images x 8 workers",
                      _ratios(rows, "mode", "eager", "reduce-overhead", **small),
                      "recommended for Figure 1's small batches", "keep eager at small batches"),
             _verdict("`channels_last=true` over NCHW, fp32 eager at 64 images",
                      _ratios(rows, "layout", "nchw", "channels_last", batch=64, precision="fp32", mode="eager"),
                      "recommended in fp32", "keep NCHW in fp32"),
             _verdict("`channels_last=true` over NCHW, bf16 eager at 64 images",
                      _ratios(rows, "layout", "nchw", "channels_last", batch=64, precision="bf16", mode="eager"),
                      "recommended with bf16", "keep NCHW with bf16"),
             _verdict("`compile=default` over eager, bf16 channels_last at 64 images",
                      _ratios(rows, "mode", "eager", "default", batch=64),
                      "recommended", "keep eager"),
             _verdict("`precision=tf32` over fp32 (not the paper's arithmetic: reported beside its tables)",
                      _ratios(rows, "precision", "fp32", "tf32", batch=64, layout="nchw", mode="eager"),
                      "faster, for runs that need not match the paper's fp32", "no faster than fp32")]
    if loaders:
        best = max(loaders, key=loaders.get)
        lines.append(f"- input: fastest `data.loader={best}` ({loaders[best]:.0f} images/s; "
                     + ", ".join(f"{k} {v:.0f}" for k, v in loaders.items()) + ")")
    if to_dali is not None:
        lines.append(f"- input: `data.loader=gpu` gives {to_dali:.2f}x the images/s of NVIDIA DALI's ResNet-50 pipeline "
                     + ("(within reach of the anchor)" if to_dali >= 0.8 else "(not within 0.8x of the anchor)"))
    if overlap is not None:
        lines.append(f"- end to end: both/min(alone) = {overlap:.2f} "
                     + ("(the loader and the step overlap)" if overlap >= 0.9 else "(the loader and the step do not overlap fully)"))
    return lines + [""]


def run_sections(sections: list[Section], out: Path, budget: float, header: list[str]) -> list[dict]:
    """Run each section under min(its limit, what is left of the budget); rewrite report.md and
    rows.csv after each one; return the timed rows."""
    out.mkdir(parents=True, exist_ok=True)
    start, rows, loaders, overlap, to_dali = time.monotonic(), [], {}, None, None
    lines = list(header)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a stopped section keeps the rows it printed

    def save(done: bool) -> None:
        tail = recommendations(rows, loaders, overlap, to_dali) + [f"Total {time.monotonic() - start:.0f} s."] if done \
            else ["(in progress: the sections above are finished)"]
        # each file replaced whole: an interrupted check leaves the old report or the new one
        runfiles.write_text(out / "report.md", "\n".join(lines + tail) + "\n")
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        runfiles.write_text(out / "rows.csv", table.getvalue())

    for section in sections:
        shown = " ".join(Path(c).name if str(c).startswith(str(ROOT)) else str(c) for c in section.command[1:])
        lines += [f"## {section.title}", "", f"`{shown}`", ""]
        left = budget - (time.monotonic() - start)
        if left < 1:
            lines += [f"not run: the {budget:.0f} s budget was spent (run the command above alone)", ""]
            continue
        limit = min(section.limit, left)
        began = time.monotonic()
        # its own session, so that a stop ends its children too (DataLoader workers, compile workers),
        # which would otherwise hold the output pipe open and the check with it
        proc = subprocess.Popen(section.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            _stop(proc)
            stdout, stderr = proc.communicate()
            why = "its time limit" if limit == section.limit else "the budget"
            status = f"stopped at {limit:.0f} s ({why}); the rows it printed are kept"
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): the section's processes go with the check
                _stop(proc)
        text = stdout + stderr[-3000:]
        lines += [f"{status}, {time.monotonic() - began:.0f} s", "", "```", text.strip()[-6000:], "```", ""]
        rows += parse_rows(text, section)
        loaders.update({k: float(v) for k, v in LOADER.findall(text)})
        if m := OVERLAP.search(text):
            overlap = float(m[1])
        if m := TO_DALI.search(text):
            to_dali = float(m[1])
        save(done=False)
    save(done=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "device"), help="reports go to <out>/<gpu name>/")
    parser.add_argument("--budget", type=float, default=480, help="seconds the whole check may take (default 480)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        print(f"gnrepro: error: --budget {args.budget:g}: give the seconds the whole check may take, e.g. --budget 480",
              file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print("gnrepro: error: the device check needs a CUDA GPU and torch sees none "
              "(torch.cuda.is_available() is false); run it on a GPU machine", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    out = Path(args.out) / slug(gpu)
    header = [f"# Device check: {gpu}", "",
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
              f"capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: "
              f"`python scripts/device_check.py --budget {args.budget:g}`", ""]
    rows = run_sections(SECTIONS, out, args.budget, header)
    print(f"device check: {out / 'report.md'} and {out / 'rows.csv'} ({len(rows)} timed rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
