"""scripts/device_check.py without a GPU: its sections share one time budget, a stopped section keeps
what it printed and takes its child processes with it, the report is rewritten after every section,
the rows it records are the rows the benchmark printed, and each recommendation follows its ratios."""
import csv
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(script):
    """A script of scripts/ as a module (registered first: its dataclasses look themselves up)."""
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    module = sys.modules[script] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


device_check = load("device_check")
Section = device_check.Section


def py(code):
    return [sys.executable, "-c", code]


ROW = "gn             8 fp32      nchw          eager               123    1.00x      0"


def test_sections_share_the_budget_and_a_stopped_one_keeps_its_rows_and_takes_its_children(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # as in a GPU owner's shell: a pipe is block-buffered
    out, pidfile = tmp_path / "gpu", tmp_path / "grandchild.pid"
    sections = [
        Section("prints a row", py(f"print({ROW!r})"), 30, 2),
        Section("reads the report so far", py(
            f"t = open({str(out / 'report.md')!r}).read(); print('report so far:', 'ok,' in t, 'in progress' in t)"), 30),
        Section("fails", py("import sys; print('boom'); sys.exit(3)"), 30),
        # a child that outlives its parent's stop would hold the output pipe open, and the check with it
        Section("outlives the budget", py(
            "import subprocess, sys, time\n"
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
            f"print({ROW.replace('gn ', 'bn ')!r})\n"
            "time.sleep(120)"), 60, 2),
        Section("after the budget", py("print('n' + 'ever ran')"), 30),
    ]
    began = time.monotonic()
    rows = device_check.run_sections(sections, out, budget=8, header=["# Device check: test", ""])
    assert time.monotonic() - began < 8 + 5  # the budget bounds the whole check, not each section
    report = (out / "report.md").read_text()
    parts = report.split("## ")
    assert "ok," in parts[1] and "report so far: True True" in parts[2]  # rewritten after section 1
    assert "exit 3" in parts[3] and "boom" in parts[3]
    assert "stopped at" in parts[4] and "(the budget)" in parts[4]
    assert "not run: the 8 s budget was spent" in parts[5] and "never ran" not in report
    assert "in progress" not in parts[-1] and "Total" in report
    assert [(r["section"], r["norm"], r["images_per_s"]) for r in rows] == [
        ("prints a row", "gn", 123.0), ("outlives the budget", "bn", 123.0)]
    with open(out / "rows.csv") as f:
        assert [(r["norm"], float(r["images_per_s"]), int(r["batch"])) for r in csv.DictReader(f)] == [
            ("gn", 123.0, 2), ("bn", 123.0, 2)]
    stat = Path(f"/proc/{pidfile.read_text()}/stat")  # the stopped section's child was stopped with it:
    assert not stat.exists() or stat.read_text().split(") ")[1][0] in "ZX", stat.read_text()  # gone (a zombie until reaped)
    assert not list(out.glob(".*tmp"))  # no half-written file left beside the report


def rows_of(**rates):
    """Rows of one section: {"norm/mode": images per s} at 2 images x 8 workers, fp32 nchw."""
    return [{"section": "s", "batch": 2, "norm": k.split("/")[0], "workers": 8, "precision": "fp32", "layout": "nchw",
             "mode": k.split("/")[1], "images_per_s": v, "ratio": "-", "graphs": 0} for k, v in rates.items()]


def line_of(lines, start):
    return next(line for line in lines if line.startswith(start))


def test_a_setting_is_recommended_only_when_faster_for_every_norm():
    what = "- `compile=reduce-overhead`"
    faster = device_check.recommendations(rows_of(**{"bn/eager": 100, "bn/reduce-overhead": 250,
                                                     "gn/eager": 80, "gn/reduce-overhead": 120}), {}, None)
    assert line_of(faster, what).endswith("bn 2.50x, gn 1.50x -> recommended for Figure 1's small batches")
    mixed = device_check.recommendations(rows_of(**{"bn/eager": 100, "bn/reduce-overhead": 250,
                                                    "gn/eager": 80, "gn/reduce-overhead": 80}), {}, None)
    assert line_of(mixed, what).endswith("gn 1.00x -> keep eager at small batches")
    missing = device_check.recommendations(rows_of(**{"bn/eager": 100}), {"pil": 900.0, "gpu": 2400.0}, 0.5, 0.6)
    assert line_of(missing, "- input: `data.loader=gpu` gives 0.60x").endswith("(not within 0.8x of the anchor)")
    assert "not measured" in line_of(missing, what)
    assert line_of(missing, "- input:").startswith("- input: fastest `data.loader=gpu` (2400 images/s")
    assert "do not overlap fully" in line_of(missing, "- end to end:")


@pytest.mark.slow
def test_the_rows_recorded_are_the_rows_the_benchmark_printed(tmp_path):
    """The real benchmark on the CPU as a section: every printed row lands in rows.csv with its rate,
    and the layout recommendation shows the ratio of those rates."""
    bench = [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), "--device", "cpu", "--model", "resnet14",
             "--norms", "bn", "gn", "--precisions", "fp32", "--layouts", "nchw", "channels_last", "--modes", "eager",
             "--batch", "64", "--size", "16", "--steps", "1", "--warmup", "0"]
    rows = device_check.run_sections([Section("bench", bench, 240, 64)], tmp_path, 240, ["# test", ""])
    report = (tmp_path / "report.md").read_text()
    printed = [line for line in report.splitlines() if line.startswith(("bn ", "gn "))]
    assert len(printed) == len(rows) == 4
    for line, row in zip(printed, rows):
        assert line.split()[:5] == [row["norm"], str(row["workers"]), row["precision"], row["layout"], row["mode"]]
        assert float(line.split()[5]) == row["images_per_s"]
    rate = {(r["norm"], r["layout"]): r["images_per_s"] for r in rows}
    line = line_of(report.splitlines(), "- `channels_last=true` over NCHW, fp32")
    for norm in ("bn", "gn"):
        assert f"{norm} {rate[(norm, 'channels_last')] / rate[(norm, 'nchw')]:.2f}x" in line


def test_a_budget_that_is_not_positive_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_check.py"), "--budget", "0", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("gnrepro: error: --budget 0") and proc.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_input_section_is_read_off_the_real_benchmark(tmp_path):
    """bench_input_pipeline.py on the CPU as a section: the fastest loader it printed is the one
    recommended, and with DALI installed the gpu/DALI ratio it printed is the one reported."""
    dali = importlib.util.find_spec("nvidia.dali") is not None
    bench = [sys.executable, str(ROOT / "scripts" / "bench_input_pipeline.py"), "--fake-images", "16", "--fake-size",
             "64", "48", "--steps", "2", "--model-steps", "1", "--loaders", "pil,gpu", "batch=2", "norm=gn",
             "data.train_crop=32", "data.eval_resize=36", "data.eval_crop=32", "data.num_workers=1", "device=cpu"]
    device_check.run_sections([Section("input", bench + (["--dali"] if dali else []), 240)], tmp_path, 240, ["# t", ""])
    report = (tmp_path / "report.md").read_text()
    rates = {k: float(v) for k, v in device_check.LOADER.findall(report)}
    assert set(rates) == {"pil", "gpu"}
    best = max(rates, key=rates.get)
    assert line_of(report.splitlines(), "- input: fastest").startswith(f"- input: fastest `data.loader={best}` "
                                                                        f"({rates[best]:.0f} images/s")
    if dali:
        printed = re.search(r"^data\.loader=gpu / DALI = ([\d.]+)", report, flags=re.M).group(1)
        assert line_of(report.splitlines(), "- input: `data.loader=gpu` gives").startswith(
            f"- input: `data.loader=gpu` gives {float(printed):.2f}x")


def test_every_section_is_a_command_its_script_accepts(tmp_path):
    """A flag or a setting a script does not know would cost a GPU owner's minutes: each section's
    arguments go through its script's own parser, and the input section's overrides compose."""
    scripts = {name: load(name) for name in ("bench_throughput", "bench_input_pipeline")}
    parsers = {name: script.build_parser() for name, script in scripts.items()}
    seen = set()
    for section in device_check.SECTIONS:
        if section.command[1:3] == ["-m", "pytest"]:
            assert section.command[3:5] == ["-m", "cuda"]
            continue
        script = Path(section.command[1]).stem
        args = parsers[script].parse_args(section.command[2:])  # exits (fails the test) on an unknown flag or value
        seen.add(script)
        if script == "bench_throughput":
            assert args.device == "cuda" and (section.batch == args.batch), section.title
        else:
            cfg = scripts[script].compose_train(["data=imagenet", f"data.root={tmp_path}", *args.overrides])
            assert cfg.device == "cuda" and cfg.batch == 64
    assert seen == set(parsers)
