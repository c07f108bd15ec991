"""The device check: the first thing to run on a GPU machine (docs/performance.md), one GPU, about
8 minutes. It runs the CUDA-only tests (``pytest -m cuda``) and the benchmarks that decide the
recommended settings, and writes one report, Markdown and CSV, under ``results/device/<gpu name>/``:

1. the CUDA-only tests: fp32 is IEEE float32 (TF32 off), CUDA graphs train BN/GN/GN+WS at 2 images
   per worker like eager steps, nvJPEG decoding;
2. ResNet-50 training steps at 64 images: BN, GN, GN+WS x fp32, tf32, bf16 x NCHW, channels_last,
   eager (ratios to fp32/NCHW/eager, GN/BN), and the trainer fed by its real loader on synthetic JPEGs;
3. torch.compile at 64 images (bf16, channels_last) for BN and GN;
4. Figure 1's smallest batch: 2 images x 8 workers on one device, eager vs CUDA graphs (reduce-overhead);
5. the input pipeline: data.loader = pil, pil_uint8, gpu on synthetic ImageNet-sized JPEGs.

    python scripts/device_check.py                      # all of it, writes results/device/<gpu>/
    python scripts/device_check.py --budget 300         # stop starting sections after 300 s

Each section runs as its own process with a time limit; one that fails or times out is reported as
such and the others still run. Without a CUDA GPU it says so in one line and exits 2.
"""
from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), "--device", "cuda", "--model", "resnet50"]
SECTIONS = [  # (title, command, time limit in seconds)
    ("CUDA-only tests", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")], 150),
    ("ResNet-50 at 64 images: norms x precision x layout, eager; end to end",
     BENCH + ["--batch", "64", "--norms", "bn", "gn", "gn_ws", "--precisions", "fp32", "tf32", "bf16",
              "--layouts", "nchw", "channels_last", "--modes", "eager", "--steps", "30", "--warmup", "5",
              "--end-to-end", "1024"], 180),
    ("ResNet-50 at 64 images: torch.compile (bf16, channels_last)",
     BENCH + ["--batch", "64", "--norms", "bn", "gn", "--precisions", "bf16", "--layouts", "channels_last",
              "--modes", "eager", "default", "--steps", "30", "--warmup", "10"], 240),
    ("Figure 1's smallest batch: 2 images x 8 workers, eager vs CUDA graphs",
     BENCH + ["--batch", "2", "--workers", "8", "--norms", "bn", "gn", "--precisions", "fp32", "--layouts", "nchw",
              "--modes", "eager", "reduce-overhead", "--steps", "50", "--warmup", "10"], 240),
    ("Input pipeline: data.loader = pil, pil_uint8, gpu",
     [sys.executable, str(ROOT / "scripts" / "bench_input_pipeline.py"), "--fake-images", "1024", "--steps", "10",
      "--loaders", "pil,pil_uint8,gpu", "device=cuda", "batch=64", "data.num_workers=8"], 150),
]
ROW = re.compile(r"^(bn|gn|gn_ws)\s+(\d+)\s+(\w+)\s+(nchw|channels_last)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+(\d+)$", re.M)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "device"), help="reports go to <out>/<gpu name>/")
    parser.add_argument("--budget", type=float, default=480, help="seconds after which no further section starts")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gnrepro: error: the device check needs a CUDA GPU and torch sees none "
              "(torch.cuda.is_available() is false); run it on a GPU machine", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    out = Path(args.out) / slug(gpu)
    out.mkdir(parents=True, exist_ok=True)
    start, rows = time.monotonic(), []
    lines = [f"# Device check: {gpu}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
             f"capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `python scripts/device_check.py`", ""]
    for title, command, limit in SECTIONS:
        lines += [f"## {title}", "", "`" + " ".join(Path(c).name if c.startswith(str(ROOT)) else c
                                                     for c in command[1:]) + "`", ""]
        if time.monotonic() - start > args.budget:
            lines += [f"not run: the {args.budget:.0f} s budget was spent", ""]
            continue
        began = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            status, text = ("ok" if proc.returncode == 0 else f"exit {proc.returncode}"), proc.stdout + proc.stderr[-3000:]
        except subprocess.TimeoutExpired as err:
            status, text = f"timed out after {limit} s", (err.stdout or b"").decode(errors="replace")
        lines += [f"{status}, {time.monotonic() - began:.0f} s", "", "```", text.strip()[-6000:], "```", ""]
        rows += [{"section": title, "norm": m[0], "workers": int(m[1]), "precision": m[2], "layout": m[3],
                  "mode": m[4], "images_per_s": float(m[5]), "ratio": m[6], "graphs": int(m[7])}
                 for m in ROW.findall(text)]
    lines.append(f"Total {time.monotonic() - start:.0f} s.")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["section", "norm", "workers", "precision", "layout", "mode", "images_per_s",
                                    "ratio", "graphs"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"device check: {out / 'report.md'} and {out / 'rows.csv'} ({len(rows)} timed rows, "
          f"{time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
