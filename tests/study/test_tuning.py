"""Per-arm tuning: the same budget per arm, pruning, best settings carried into the comparison
and shown in the report."""

import json
import os
import re
import subprocess

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from harness.config.study import load_study
from harness.errors import AblateError
from tests import warm
from tests.conftest import ledger_study

STUDY = """
name: tuned
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 40, batch_size: 4, log_interval: 10, eval_interval: 10}
data: {val_windows: 8}
grid: {model.norm: [layernorm, rmsnorm]}
seeds: 2
tune:
  space:
    train.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
    train.warmup_steps: {type: categorical, choices: [0, 10]}
  trials: 6
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    (folder / "study.yaml").write_text(STUDY)
    command = [*warm.command(), "run", "study.yaml", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return folder


def _tuning(folder, arm):
    return optuna.load_study(study_name=f"ablate:tuned:tune:{arm}", storage=f"sqlite:///{folder}/optuna.db")


def test_every_arm_gets_the_same_budget_and_some_trials_are_pruned(tuned):
    states = {arm: [t.state.name for t in _tuning(tuned, arm).trials] for arm in ("layernorm", "rmsnorm")}
    assert all(len(s) == 6 for s in states.values())
    assert sum(s.count("PRUNED") for s in states.values()) >= 1
    assert all("COMPLETE" in s for s in states.values())


def test_trials_are_mlflow_runs_tagged_with_number_and_state(tuned):
    client = MlflowClient(f"sqlite:///{tuned}/mlflow.db")
    experiment = client.get_experiment_by_name("tuned").experiment_id
    trials = client.search_runs([experiment], "tags.`ablate.kind` = 'tune_trial'")
    assert len(trials) == 12
    assert {r.data.tags["state"] for r in trials} <= {"finished", "pruned", "failed"}
    for arm in ("layernorm", "rmsnorm"):
        study = _tuning(tuned, arm)
        tagged = {int(r.data.tags["trial"]): r.data.tags["state"] for r in trials if r.data.tags["arm"] == arm}
        expected = {t.number: {"COMPLETE": "finished", "PRUNED": "pruned"}[t.state.name] for t in study.trials}
        assert tagged == expected


def test_the_comparison_runs_each_arms_best_setting_and_the_report_shows_it(tuned):
    client = MlflowClient(f"sqlite:///{tuned}/mlflow.db")
    experiment = client.get_experiment_by_name("tuned").experiment_id
    runs = client.search_runs([experiment], "tags.`ablate.kind` = 'arm_run'")
    assert len(runs) == 4
    report = (tuned / "reports" / "tuned" / "report.md").read_text()
    assert "## Tuning" in report and (tuned / "reports" / "tuned" / "tuning.png").exists()
    for arm in ("layernorm", "rmsnorm"):
        best = _tuning(tuned, arm).best_params
        for run in (r for r in runs if r.data.tags["arm"] == arm):
            assert float(run.data.params["train.lr"]) == pytest.approx(best["train.lr"])
            assert int(run.data.params["train.warmup_steps"]) == best["train.warmup_steps"]
        setting = json.dumps({"train.lr": best["train.lr"], "train.warmup_steps": best["train.warmup_steps"]},
                             sort_keys=True)
        assert setting in report
    tuning = pd.read_csv(tuned / "reports" / "tuned" / "tuning.csv")
    assert len(tuning) == 12


@pytest.mark.parametrize("space,message", [
    ("{lr: {type: float, low: 1, high: 2}}", "must start with model., train. or data."),
    ("{train.lr: {type: float, low: 0.0, high: 0.1, log: true}}", "log-scaled dimension needs low > 0"),
    ("{train.lr: {type: float, low: 0.1, high: 0.01}}", "needs low < high"),
    ("{model.norm: {type: categorical}}", "needs choices"),
])
def test_a_malformed_search_space_is_refused(tmp_path, space, message):
    path = tmp_path / "study.yaml"
    path.write_text(f"name: s\ntune:\n  space: {space}\n")
    with pytest.raises(AblateError, match=message):
        load_study(path)


def test_local_workers_share_the_tuning_budget_then_the_runs(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("trials: 6", "trials: 3"))
    command = [*warm.command(), "run", "study.yaml", "--jobs", "2"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    workers = set()
    for arm in ("layernorm", "rmsnorm"):
        trials = _tuning(tmp_path, arm).trials
        assert 3 <= len(trials) <= 4, "the budget is shared: at most one extra trial per extra worker"
        workers |= {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2
    ledger = ledger_study(f"sqlite:///{tmp_path}/optuna.db", "tuned")
    assert sorted(t.state.name for t in ledger.trials if not t.user_attrs.get("empty")) == ["COMPLETE"] * 4
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tuned").experiment_id])
    threads = {r.data.tags["execution_threads"] for r in runs if "execution_threads" in r.data.tags}
    assert threads == {str(max(1, os.cpu_count() // 2))}, "each of the two workers gets its share of the cores"


def test_an_arm_whose_every_trial_diverged_is_reported_as_such_and_the_others_are_compared(tmp_path):
    """One dead arm used to stop the whole study after tuning: no report for the arms that tuned."""
    (tmp_path / "study.yaml").write_text("""
name: dead_arm
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 20, batch_size: 4, eval_interval: 10}
data: {val_windows: 8}
arms:
  - name: baseline
  - name: hot
    set: {train.lr: 80.0, train.grad_clip: 0}
  - name: rmsnorm
    set: {model.norm: rmsnorm}
seeds: 2
tune:
  space:
    train.warmup_steps: {type: categorical, choices: [0, 5]}
  trials: 2
""")
    command = [*warm.command(), "run", "study.yaml"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stderr.split())
    assert "arm 'hot': all 2 tuning trials ended without a result (2 diverged)" in said, said
    assert "The other arms are compared without it" in said
    assert "may be the arm's own settings (train.lr=80.0, train.grad_clip=0)" in said
    assert "all 2 settings tune.space allows were tried, so more trials cannot help" in said
    assert "4 runs planned, 4 queued" in said, "two seeds each of baseline and rmsnorm, none of hot"
    assert "rmsnorm vs baseline:" in first.stdout
    report = (tmp_path / "reports" / "dead_arm" / "report.md").read_text()
    assert "- **hot vs baseline**: no verdict — tuning left it without a setting" in report
    assert "all 2 tuning trials ended without a result (2 diverged)" in report
    assert "3 arms (1 without a tuned setting), 4 runs" in report
    assert "grad_clip = " not in report, "hot clips no gradients: grad_clip is not shared by every arm"
    # trials, completed, pruned, diverged, failed: its two trials diverged, and the Tuning table says so
    assert re.search(r"\| hot +\| 2 +\| 0 +\| 0 +\| 2 +\| 0 +\|", report), report
    assert "no text sample" not in first.stderr, "a diverged trial has nothing to sample"
    tuning = pd.read_csv(tmp_path / "reports" / "dead_arm" / "tuning.csv")
    assert sorted(tuning.loc[tuning["arm"] == "hot", "state"]) == ["diverged", "diverged"]
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "4 runs planned, 0 queued" in again.stderr and "all 2 tuning trials" in again.stderr


def test_a_baseline_whose_every_trial_diverged_says_so_and_how_to_go_on(tmp_path):
    """A dead end was "no completed tuning trial yet; run `ablate run`", which trained nothing
    again (the budget was spent) and said the same."""
    (tmp_path / "study.yaml").write_text(STUDY.replace("{steps: 40,", "{steps: 20, grad_clip: 0,")
                                         .replace("low: 1.0e-4, high: 3.0e-2", "low: 50.0, high: 100.0")
                                         .replace("trials: 6", "trials: 2"))
    command = [*warm.command(), "run", "study.yaml"]
    for _ in range(2):  # the second run meets the spent budget
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "arm 'layernorm': all 2 tuning trials ended without a result (2 diverged)" in result.stderr, result.stderr
        assert "raise tune.trials above 2" in result.stderr
        assert "It is the baseline, so no arm can be compared" in " ".join(result.stderr.split())
