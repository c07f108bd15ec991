"""The step-time benchmarks in scripts/ run and print ratios consistent with the times they print."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_bench_cpu_threads_prints_one_row_per_batch_with_its_ratio():
    out = run("bench_cpu_threads.py", "--images", "2", "4", "--steps", "1", "--size", "8")
    rows = re.findall(r"^\s+(\d+)\s+(\d+)ms\s+(\d+)ms\s+([\d.]+)x$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [2, 4]
    for _, one, many, ratio in rows:
        one, many, ratio = int(one), int(many), float(ratio)
        assert one > 0 and many > 0
        # the times are printed rounded to 1 ms and the ratio to 0.01 (a 2-thread step slowed 20x by a
        # busy machine printed 240ms / 5415ms as 0.04x): the ratio of the unrounded times lies in between
        assert (one - 0.5) / (many + 0.5) - 0.005 <= ratio <= (one + 0.5) / (many - 0.5) + 0.005, (one, many, ratio)


@pytest.mark.slow
def test_bench_per_worker_bn_prints_both_steps_and_the_overhead():
    out = run("bench_per_worker_bn.py", "--batch", "2", "--workers", "2", "--size", "8", "--steps", "1",
              "--device", "cpu")
    per_worker = float(re.search(r"per-worker BN\s+median step\s+([\d.]+) ms", out).group(1))
    plain = float(re.search(r"plain BN\s+median step\s+([\d.]+) ms", out).group(1))
    overhead = float(re.search(r"overhead of the emulation: ([\d.]+)x", out).group(1))
    assert abs(overhead - per_worker / plain) < 0.01 * overhead + 0.002


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_bench_throughput_prints_each_setting_with_its_ratio_to_the_fp32_eager_nchw_row():
    out = run("bench_throughput.py", "--device", "cpu", "--model", "resnet26", "--norms", "gn",
              "--precisions", "fp32", "bf16", "--layouts", "nchw", "channels_last", "--modes", "eager",
              "--batch", "2", "--size", "16", "--steps", "1", "--warmup", "0")
    rows = re.findall(r"^gn\s+1\s+(fp32|bf16)\s+(nchw|channels_last)\s+eager\s+([\d.]+)\s+([\d.]+)x\s+0$", out, flags=re.M)
    assert [(r[0], r[1]) for r in rows] == [("fp32", "nchw"), ("fp32", "channels_last"), ("bf16", "nchw"),
                                           ("bf16", "channels_last")]
    base = float(rows[0][2])
    assert float(rows[0][3]) == 1.0
    for _, _, rate, ratio in rows:
        assert abs(float(ratio) - float(rate) / base) < 0.01 + 0.02 * float(ratio)  # rates print 3 digits
    assert re.search(r"^input: uint8 to cpu \+ normalize\s+[\d.]+ images/s$", out, flags=re.M)


@pytest.mark.slow
def test_every_compiled_row_of_bench_throughput_ran_compiled_graphs():
    """Row honesty: more compiled settings than dynamo's recompile limit (8) in one process, each row
    compiled from a reset compiler (graphs > 0); per-worker BN timed at two worker counts; GN/BN ratios
    printed from the rows' own rates; the trainer fed by its real loader on synthetic JPEGs."""
    out = run("bench_throughput.py", "--device", "cpu", "--model", "resnet14", "--norms", "bn", "gn",
              "--precisions", "fp32", "--layouts", "nchw", "channels_last", "--modes", "eager", "default",
              "--workers", "1", "2", "--batch", "2", "--size", "16", "--steps", "1", "--warmup", "1",
              "--end-to-end", "16", "--backend", "eager")  # dynamo's graph capture, without Inductor's code generation
    rows = re.findall(r"^(bn|gn)\s+(\d)\s+fp32\s+(nchw|channels_last)\s+(eager|default)\s+([\d.]+)\s+\S+\s+(\d+)$",
                      out, flags=re.M)
    compiled = [r for r in rows if r[3] == "default"]
    assert len(rows) == 16 and len(compiled) == 8, out
    assert all(int(r[5]) > 0 for r in compiled), out          # each compiled row ran a compiled graph
    assert all(int(r[5]) == 0 for r in rows if r[3] == "eager"), out
    assert {r[1] for r in rows} == {"1", "2"}
    rate = {(r[0], r[1], r[2], r[3]): float(r[4]) for r in rows}
    for workers, layout, mode, ratio in re.findall(r"^gn/bn\s+workers (\d)\s+fp32 (\S+) (\S+): ([\d.]+)x", out, flags=re.M):
        want = rate[("gn", workers, layout, mode)] / rate[("bn", workers, layout, mode)]
        assert abs(float(ratio) - want) < 0.02 + 0.02 * want
    assert re.search(r"^end to end: bn fp32 eager fed by the real pil\S* loader, data.num_workers=\d+\s+[\d.]+ images/s$",
                     out, flags=re.M), out
    overlap = re.search(r"^overlap: loader alone ([\d.]+), step alone ([\d.]+), both ([\d.]+) images/s; "
                        r"both/min\(alone\) = ([\d.]+) .*both/taking-turns = ([\d.]+)", out, flags=re.M)
    assert overlap, out  # the row a GPU owner reads the overlap from, its ratios from its own rates
    loader, step, both, to_min, to_turns = map(float, overlap.groups())
    assert abs(to_min - both / min(loader, step)) < 0.02 + 0.03 * to_min
    assert abs(to_turns - both * (1 / loader + 1 / step)) < 0.02 + 0.03 * to_turns


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_device_check_refuses_in_one_line_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("gnrepro: error: the device check needs a CUDA GPU") and proc.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written
