"""SIGKILL in the middle of `ablate run`: the same command again completes the study, trains
no finished run again, resumes the killed one from its checkpoint, and MLflow holds every
metric point of every run exactly once."""

import signal
import time

from tests.reliability.conftest import EVAL, FAULTS, STEPS, ablate, arm_runs, lost_in, start_ablate, two_run_study

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
