"""`ablate train` and `ablate generate` from the command line."""

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests import warm

TINY_RUN = """
name: tiny
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 20, batch_size: 4, log_interval: 5, eval_interval: 10}
data: {val_windows: 4}
"""


def ablate(*args, cwd):
    command = [*warm.command(), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_then_generate(tmp_path):
    (tmp_path / "run.yaml").write_text(TINY_RUN)
    trained = ablate("train", "run.yaml", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "finished after 20 steps" in trained.stdout
    checkpoint = next(Path(tmp_path, "runs", "tiny").glob("*/checkpoint.pt"))
    again = ablate("train", "run.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already finished in MLflow (experiment 'tiny'); nothing was trained: train_loss=" in again.stdout

    # tracked like a one-arm study: its experiment, a parent run, one run with the same params and artifacts
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    [run] = client.search_runs([experiment], "tags.`ablate.kind` = 'arm_run'")
    assert run.data.params["train.steps"] == "20" and run.data.tags["arm"] == "base" and run.info.status == "FINISHED"
    assert run.data.tags["run_key"] == checkpoint.parent.name and run.data.metrics["steps_trained"] == 20
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model_summary.txt"}
    assert len(client.search_runs([experiment], "tags.`ablate.kind` = 'study'")) == 2

    sampled = ablate("generate", str(checkpoint), "--prompt", "The ", "--max-new-tokens", "30", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("The ") and len(sampled.stdout.rstrip("\n")) == 34
    from_folder = ablate("generate", str(checkpoint.parent), "--prompt", "The ", "--max-new-tokens", "30", cwd=tmp_path)
    assert from_folder.returncode == 0 and from_folder.stdout == sampled.stdout, from_folder.stderr


@pytest.mark.parametrize("override,message", [
    ("data.dataset={name: text, path: missing.txt}", "no file matches 'missing.txt'"),
    ("base.train.lr=50.0", "the run diverged"),
])
def test_user_errors_exit_2_with_one_message(tmp_path, override, message):
    (tmp_path / "run.yaml").write_text(TINY_RUN)
    result = ablate("train", "run.yaml", "--set", override, "--set", "base.train.grad_clip=0", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_generate_from_a_missing_checkpoint_exits_2(tmp_path):
    result = ablate("generate", "nope.pt", cwd=tmp_path)
    assert result.returncode == 2 and "checkpoint nope.pt does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = ablate("generate", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "empty is a folder with 0 checkpoints" in result.stderr, result.stderr
