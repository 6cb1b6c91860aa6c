"""The benchmarks run and print their ratios (the figures themselves are not tested)."""

import re
import subprocess

import pytest

from tests import warm


@pytest.mark.parametrize("name,label", [("overhead", "harness/bare"), ("tracking", "tracked/untracked"),
                                        ("pruning", "share of steps saved")])
def test_benchmark_prints_a_ratio_measured_in_one_process(name, label):
    command = [*warm.command(), "bench", name, "--steps", "20", "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ratio = float(re.search(rf"{re.escape(label)}: ([\d.]+)", result.stdout).group(1))
    assert ratio > 0


def test_speed_benchmark_prints_throughput_kernel_and_overhead_tables():
    command = [*warm.command(), "bench", "speed", "--steps", "3",
               "--eager-only"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "no GPU here: a small shape stands in for GPT-2 small" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    # the nanoGPT-style anchor and every attention backend, each with a tokens/s figure
    for label in ("nanoGPT-style", "| math", "| sdpa", "| flash_attn", "| triton"):
        assert any(label in row for row in rows), f"no row for {label}:\n{out}"
    assert "kernel timings skipped" in out
    assert float(re.search(r"harness/bare: ([\d.]+)", out).group(1)) > 0


def test_kernel_table_times_each_triton_kernel_against_torch():
    """The GPU kernel table, run here through Triton's interpreter on a tiny shape: every
    kernel gets a time and a ratio (the figures mean nothing on the CPU)."""
    pytest.importorskip("triton")
    import torch

    from harness.bench.speed import Shape, kernel_table

    table = kernel_table(torch.device("cpu"), Shape(1, 32, 2, 16, 64, batch_size=2), iterations=1, compiled=False)
    assert list(table["kernel"]) == ["rmsnorm", "swiglu", "attention (vs sdpa)"]
    assert (table["eager/triton"] > 0).all() and (table["triton ms"] > 0).all()


def test_workers_benchmark_runs_the_study_with_each_number_of_jobs(tmp_path):
    command = [*warm.command(), "bench", "workers", "--steps", "4", "--max-jobs", "2", "--seeds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\|\s+\d+\s+\|", line)]
    assert [int(row.split("|")[1]) for row in rows] == [1, 2]
    assert float(rows[0].split("|")[-2]) == 1.0 and float(rows[1].split("|")[-2]) > 0
    assert not list(tmp_path.iterdir()), "each row runs in a folder of its own"

