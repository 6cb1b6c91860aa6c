"""`ablate bench data` runs and prints its tables (the figures themselves are not tested); a file
of its own, so that the suite's workers share the benchmarks."""

import re
import subprocess

from tests import warm


def test_data_benchmark_prints_each_size_and_tokenizer_with_its_ratios(tmp_path):
    command = [*warm.command(), "bench", "data", "--sizes", "0.5", "--folder", str(tmp_path), "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if re.match(r"\|\s+0\.5\s+\|", line)]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [("0.5", "char"), ("0.5", "bpe")]
    header = next(line for line in result.stdout.splitlines() if "RSS / smallest" in line)
    assert "tokenize / library" in header and "first step / smallest" in header
    ratio = float(rows[1][[name.strip() for name in header.split("|")[1:-1]].index("tokenize / library")])
    assert ratio > 0  # BPE: ablate's tokenizing against tiktoken's own batch encode
    assert float(re.search(r"\|\s+16 x 64\s+\|[^|]+\|[^|]+\|\s+([\d.e-]+)", result.stdout).group(1)) > 0  # draw / step
    assert not list(tmp_path.glob("synthetic-*")), "the corpora are removed once measured"
