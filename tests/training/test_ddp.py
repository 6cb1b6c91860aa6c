"""Data-parallel training under torchrun: 2 CPU processes with gloo match one process with
the same global batch."""

import subprocess
import sys

import pytest

from harness.training.checkpoint import load_checkpoint

from tests import warm

RUN = """
name: ddp
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 30, batch_size: 8, grad_accum: 2, log_interval: 5, eval_interval: 10}
data: {val_windows: 16}
"""


def _checkpoint(folder):
    return load_checkpoint(next(folder.glob("ddp/*/checkpoint.pt")))


def _curve(folder, key):
    return [entry[key] for entry in _checkpoint(folder)["history"] if key in entry]


def test_two_gloo_processes_give_the_loss_of_one_process(tmp_path):
    (tmp_path / "run.yaml").write_text(RUN)
    single = subprocess.run([*warm.command(), "train", "run.yaml", "--out", "single"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    parallel = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "harness.cli", "train", "run.yaml", "--out", "parallel"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert parallel.returncode == 0, parallel.stderr
    assert (_checkpoint(tmp_path / "single")["processes"], _checkpoint(tmp_path / "parallel")["processes"]) == (1, 2)
    for key in ("train_loss", "val_loss"):
        one, two = _curve(tmp_path / "single", key), _curve(tmp_path / "parallel", key)
        assert len(one) == len(two) > 0
        assert two == pytest.approx(one, rel=1e-4)
