"""SIGKILL in the middle of `ablate run`: the same command again completes the study, trains
no finished run again, resumes the killed one from its checkpoint, and MLflow holds every
metric point of every run exactly once."""

import signal
import time

from mlflow.tracking import MlflowClient

from tests.faults import FAULTS
from tests.reliability.conftest import EVAL, STEPS, ablate, arm_runs, lost_in, lost_points, start_ablate, two_run_study

STUDY = two_run_study("killed")


def test_sigkill_then_the_same_command_completes_the_study_and_loses_nothing(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    # the first run has finished and the second has checkpointed at least once
    deadline = time.time() + 300
    while len(list(tmp_path.glob("runs/killed/*/checkpoint.pt"))) < 2 and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    before = {run.data.tags["arm"]: run for run in arm_runs(uri, "killed")}
    assert before["pre"].data.tags["state"] == "finished" and before["post"].data.tags["state"] == "running"
    FAULTS["runs interrupted"] += 1

    started = time.time()
    again = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr
    assert time.time() - started < 120, "the re-run waited for the killed worker's heartbeat to go stale"
    assert "2 runs planned, 1 queued" in again.stderr and "1 runs trained" in again.stderr

    after = {run.data.tags["arm"]: run for run in arm_runs(uri, "killed")}
    assert len(arm_runs(uri, "killed")) == 2, "a run was trained again in a new MLflow run"
    assert after["pre"].info.end_time == before["pre"].info.end_time, "the finished run was trained again"
    resumed = after["post"]
    assert resumed.info.run_id == before["post"].info.run_id and resumed.data.tags["state"] == "finished"
    assert EVAL <= STEPS - resumed.data.metrics["steps_trained"] < STEPS, "it did not resume from its checkpoint"
    lost = lost_in(uri, after.values())
    FAULTS["runs recovered"] += 1
    FAULTS["metric points lost"] += lost
    assert lost == 0


def test_a_run_without_checkpoints_killed_between_evaluations_logs_no_point_twice(tmp_path):
    """No checkpoint: the re-run trains from step 0 and must skip every point MLflow already
    has, metric by metric (val_loss is ahead of train_loss here: evaluated at 40, logged at 30)."""
    steps, log, evaluate = 200, 30, 20
    (tmp_path / "study.yaml").write_text(f"""
name: nocheckpoint
base:
  model: {{n_layer: 2, d_model: 64, n_head: 2, context_length: 64}}
  train: {{steps: {steps}, batch_size: 8, log_interval: {log}, eval_interval: {evaluate}, checkpoint_interval: 0}}
data: {{val_windows: 4}}
seeds: 1
""")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    client, deadline = MlflowClient(uri), time.time() + 300
    while True:  # val_loss reaches MLflow at each evaluation; train_loss 60 is still in memory
        assert process.poll() is None and time.time() < deadline, process.communicate()[1]
        created = (tmp_path / "mlflow.db").exists()  # by ablate: a client here would create it too
        runs = arm_runs(uri, "nocheckpoint") if created and client.get_experiment_by_name("nocheckpoint") else []
        if runs and 40 in {m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")}:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    FAULTS["runs interrupted"] += 1

    again = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr
    (run,) = arm_runs(uri, "nocheckpoint")
    assert run.data.tags["state"] == "finished" and run.data.metrics["steps_trained"] == steps
    lost = lost_points(uri, run, steps, log, evaluate)  # fails on a point logged twice
    FAULTS["runs recovered"] += 1
    FAULTS["metric points lost"] += lost
    assert lost == 0
