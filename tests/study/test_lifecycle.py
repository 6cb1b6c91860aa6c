"""One run lifecycle: comparison runs and tuning trials meet Ctrl-C, kills, failures and
divergence the same way, and one vocabulary of states maps onto MLflow and Optuna."""

import signal
import subprocess
import time

import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from harness.config.run_state import RunState
from tests import warm
from tests.faults import FAULTS


def test_each_state_has_one_meaning_in_mlflow_and_in_optuna():
    expected = {  # state: (settled, MLflow status, Optuna trial state)
        RunState.RUNNING: (False, "RUNNING", TrialState.RUNNING),
        RunState.FINISHED: (True, "FINISHED", TrialState.COMPLETE),
        RunState.DIVERGED: (True, "FAILED", TrialState.PRUNED),
        RunState.PRUNED: (True, "FINISHED", TrialState.PRUNED),
        RunState.FAILED: (False, "FAILED", TrialState.FAIL),
        RunState.INTERRUPTED: (False, "KILLED", TrialState.FAIL),
    }
    assert set(expected) == set(RunState)
    for state, (settled, status, trial_state) in expected.items():
        assert (state.settled, state.mlflow_status, state.trial_state) == (settled, status, trial_state)
    assert RunState.of({}) == RunState.RUNNING, "a run killed before it said anything is not settled"


TUNED = """
name: tuned_interrupt
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 300, batch_size: 4, log_interval: 10, eval_interval: 50}
data: {val_windows: 4}
seeds: 1
tune:
  space: {train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  trials: 2
"""


def _start(folder):
    command = [*warm.command(), "run", "study.yaml"]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_in_a_tuning_trial_is_resumed_like_a_comparison_run(tmp_path):
    (tmp_path / "study.yaml").write_text(TUNED)
    process = _start(tmp_path)
    deadline = time.time() + 240
    while not list(tmp_path.glob("runs/tuned_interrupt/tune/*/checkpoint.pt")) and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tuned_interrupt").experiment_id
    [interrupted] = client.search_runs([experiment], "tags.`ablate.kind` = 'tune_trial'")
    assert interrupted.info.status == "KILLED" and interrupted.data.tags["state"] == "interrupted"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    [trial] = optuna.load_study(study_name="ablate:tuned_interrupt:tune:base", storage=storage).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["state"] == "interrupted"
    FAULTS["runs interrupted"] += 1

    again = _start(tmp_path)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    trials = optuna.load_study(study_name="ablate:tuned_interrupt:tune:base", storage=storage).trials
    retry = [t for t in trials if RetryHeartbeatStaleTrialCallback.retry_history(t) == [trial.number]]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trial.params, "the same setting is tried again"
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2, "the budget is still two trials"

    resumed = client.get_run(interrupted.info.run_id)
    assert resumed.data.tags["state"] == "finished" and resumed.info.status == "FINISHED"
    assert 0 < resumed.data.metrics["steps_trained"] < 300, "it continued from its checkpoint"
    assert len(client.search_runs([experiment], "tags.`ablate.kind` = 'tune_trial'")) == 2
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)) and len(steps) == 30, "no point lost or logged twice"
    FAULTS["runs recovered"] += 1
