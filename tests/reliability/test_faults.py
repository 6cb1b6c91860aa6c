"""Faults that end one run but not the study: NaN loss, out of memory, a missing checkpoint.
Each run is marked failed (or diverged) with its reason as a tag, the study goes on, and the
report counts them."""

import time

import pandas as pd
from mlflow.tracking import MlflowClient

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs

STUDY = """
name: faulty
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 20, batch_size: 4, log_interval: 5, eval_interval: 10}
data: {val_windows: 4}
arms:
  - name: healthy
  - name: nan_loss
    set: {train: {lr: 1.0e+6, grad_clip: 0}}
  - name: out_of_memory  # a 640 GB embedding table: within the size limits, beyond any machine's memory
    set: {model: {vocab_size: 10000000000}}
seeds: 1
report: {baseline: healthy}
"""


def test_a_faulty_run_is_marked_with_its_reason_and_the_study_goes_on(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    runs = {run.data.tags["arm"]: run for run in arm_runs(uri, "faulty")}
    assert runs["healthy"].info.status == "FINISHED" and runs["healthy"].data.tags["state"] == "finished"
    expected = {"nan_loss": ("diverged", "training loss"), "out_of_memory": ("failed", "out of memory")}
    for arm, (state, reason) in expected.items():
        tags = runs[arm].data.tags
        assert runs[arm].info.status == "FAILED" and tags["state"] == state, (arm, tags)
        assert reason in tags["failure_reason"], (arm, tags["failure_reason"])
        assert reason in result.stderr or state == "diverged"

    results = pd.read_csv(tmp_path / "reports" / "faulty" / "results.csv")
    assert dict(zip(results["arm"], results["state"])) == {"healthy": "finished", **{a: s for a, (s, _) in expected.items()}}
    summary = pd.read_csv(tmp_path / "reports" / "faulty" / "summary.csv").set_index("arm")
    assert summary.loc["out_of_memory", "failed"] == 1 and summary.loc["nan_loss", "diverged"] == 1
    report = (tmp_path / "reports" / "faulty" / "report.md").read_text()
    assert "out_of_memory seed 0 failed: " in report

    # failed runs are tried again by the next `ablate run`; finished and diverged ones are not
    again = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr
    assert "3 runs planned, 1 queued" in again.stderr
    assert len(arm_runs(uri, "faulty")) == 3  # retried in their own MLflow runs, not new ones


def test_a_missing_starting_checkpoint_stops_the_study_before_anything_trains(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("set: {train: {lr: 1.0e+6, grad_clip: 0}}",
                                                       "set: {train: {init_from: gone/checkpoint.pt}}"))
    result = ablate(tmp_path, "run", "study.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "arm 'nan_loss': train.init_from: checkpoint gone/checkpoint.pt does not exist" in result.stderr
    assert not (tmp_path / "runs").exists()
    FAULTS["runs interrupted"] += 3


def test_a_study_whose_every_run_diverges_says_so_at_once_without_blaming_the_store(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.split("arms:")[0] + "grid: {model.placement: [pre, post]}\nseeds: 1\n")
    started = time.time()
    result = ablate(tmp_path, "run", "study.yaml", "--set", "base.train.lr=.inf")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "no run of study 'faulty' finished, so there is nothing to compare: 2 diverged" in result.stderr
    assert "tracking store" not in result.stderr and time.time() - started < 120


def test_a_description_longer_than_mlflow_takes_is_cut_for_mlflow_only(tmp_path):
    description = "why this study, " + "x" * 25_000
    (tmp_path / "study.yaml").write_text(STUDY.split("arms:")[0].replace("name: faulty", "name: wordy")
                                         + f"description: {description}\nseeds: 1\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    tag = MlflowClient(uri).get_experiment_by_name("wordy").tags["ablate.description"]
    assert tag.startswith("why this study, xxx") and tag.endswith("the study file has the rest)") and len(tag) <= 5000
