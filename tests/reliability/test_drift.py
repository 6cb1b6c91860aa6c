"""The ledger only queues; MLflow holds what finished. When they drift apart (the tracking store
deleted or reset, a run deleted, another tracking URI over the same ledger), a run MLflow does
not hold is trained again, the user is told why, and `ablate status` shows it; a staged study
whose first stage was cleaned has a way out that works when followed to the letter."""

import os
import re
import shlex
import subprocess
import sys

import pandas as pd

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs, lost_points

STUDY = """
name: drift
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 20, batch_size: 2, eval_interval: 10}
data: {val_windows: 2}
grid: {model.placement: [pre, post]}
seeds: 1
report: {baseline: pre}
"""


def _finished(folder, store="mlflow.db"):
    return sorted(r.data.tags["arm"] for r in arm_runs(f"sqlite:///{folder}/{store}", "drift")
                  if r.data.tags["state"] == "finished")


def test_a_deleted_tracking_store_under_a_finished_ledger_trains_the_study_again(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    assert ablate(tmp_path, "run", "study.yaml").returncode == 0
    (tmp_path / "mlflow.db").unlink()

    status = ablate(tmp_path, "status", "study.yaml")
    assert status.returncode == 0, status.stderr
    assert "2 runs the ledger lists as finished are missing from the tracking store" in status.stdout

    again = ablate(tmp_path, "run", "study.yaml")
    assert again.returncode == 0, again.stderr
    assert "2 runs the ledger lists as finished are missing from the tracking store" in again.stderr
    assert "2 runs trained" in again.stderr and _finished(tmp_path) == ["post", "pre"]
    # the runs' checkpoints were at their end: their curves come back from the checkpoints, whole
    for run in arm_runs(f"sqlite:///{tmp_path}/mlflow.db", "drift"):
        assert lost_points(f"sqlite:///{tmp_path}/mlflow.db", run, 20, 10, 10) == 0
        assert run.data.tags["attention_backend"] != "(not run yet)"
    results = pd.read_csv(tmp_path / "reports" / "drift" / "results.csv")
    assert results["val_loss"].notna().all(), results
    FAULTS["runs retrained after ledger drift"] += 2
    quiet = ablate(tmp_path, "run", "study.yaml")
    assert quiet.returncode == 0 and "0 queued" in quiet.stderr and "missing" not in quiet.stderr, quiet.stderr


def test_a_run_deleted_in_mlflow_is_trained_again(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    assert ablate(tmp_path, "run", "study.yaml").returncode == 0
    [post] = [r for r in arm_runs(f"sqlite:///{tmp_path}/mlflow.db", "drift") if r.data.tags["arm"] == "post"]
    deleted = subprocess.run([sys.executable, "-m", "mlflow", "runs", "delete", "--run-id", post.info.run_id],
                             cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert deleted.returncode == 0, deleted.stderr
    again = ablate(tmp_path, "run", "study.yaml")
    assert again.returncode == 0, again.stderr
    assert "1 runs the ledger lists as finished are missing" in again.stderr and "1 runs trained" in again.stderr
    assert _finished(tmp_path) == ["post", "pre"]
    FAULTS["runs retrained after ledger drift"] += 1


def test_another_tracking_uri_over_the_same_ledger_trains_into_the_new_store(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    assert ablate(tmp_path, "run", "study.yaml").returncode == 0
    other = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/other.db")
    assert other.returncode == 0, other.stderr
    assert "2 runs trained" in other.stderr and _finished(tmp_path, "other.db") == ["post", "pre"]
    FAULTS["runs retrained after ledger drift"] += 2


PRETRAIN = """
name: pre
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 16}
  train: {steps: 8, batch_size: 8, log_interval: 4, eval_interval: 8}
data: {dataset: addition, digits: 2, val_examples: 16}
seeds: 1
"""
FINETUNE = """
name: tuned
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 16}
  train: {steps: 4, batch_size: 8, log_interval: 2, eval_interval: 4}
data: {dataset: addition, digits: 3, val_examples: 16}
arms:
  - name: scratch
  - name: full
    set: {train.init_from: {study: pre, arm: base, seed: same}}
seeds: 1
"""


def test_a_cleaned_first_stage_has_a_way_out_that_works_when_followed(tmp_path):
    (tmp_path / "pre.yaml").write_text(PRETRAIN)
    (tmp_path / "tuned.yaml").write_text(FINETUNE)
    assert ablate(tmp_path, "run", "pre.yaml").returncode == 0
    assert ablate(tmp_path, "clean", "pre").returncode == 0
    stuck = ablate(tmp_path, "run", "tuned.yaml")
    assert stuck.returncode == 2 and "Traceback" not in stuck.stderr, stuck.stderr
    advice = " ".join(stuck.stderr.split())
    command = re.search(r"\((MLFLOW_TRACKING_URI=\S+ mlflow runs delete --run-id \w+),", advice)
    assert command, advice
    variable, *mlflow = shlex.split(command.group(1))
    name, value = variable.split("=", 1)
    deleted = subprocess.run([sys.executable, "-m", *mlflow], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, name: value})
    assert deleted.returncode == 0, deleted.stderr
    retrained = ablate(tmp_path, "run", "pre.yaml")
    assert retrained.returncode == 0 and "1 runs trained" in retrained.stderr, retrained.stderr
    unstuck = ablate(tmp_path, "run", "tuned.yaml")
    assert unstuck.returncode == 0, unstuck.stderr
    assert "2 runs trained" in unstuck.stderr
    FAULTS["runs retrained after ledger drift"] += 1
