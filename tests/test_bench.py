"""The benchmarks run and print their ratios (the figures themselves are not tested)."""

import re
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name,label", [("overhead", "harness/bare"), ("tracking", "tracked/untracked"),
                                        ("pruning", "share of steps saved")])
def test_benchmark_prints_a_ratio_measured_in_one_process(name, label):
    command = [sys.executable, "-c", "from harness.cli import main; main()", "bench", name, "--steps", "20", "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ratio = float(re.search(rf"{re.escape(label)}: ([\d.]+)", result.stdout).group(1))
    assert ratio > 0
