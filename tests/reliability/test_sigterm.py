"""SIGTERM (SLURM preemption, `scancel`, `timeout`, a container stop) is Ctrl-C: the run in
progress is checkpointed and marked interrupted, the execution's parent run ends KILLED, the
command exits 143; a `--jobs N` parent forwards it to its workers and waits for them; an
execution killed outright has its parent run ended by the next one; and a stop request is
honoured at every moment, while the stores are created too."""

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs, start_ablate

STUDY = """
name: preempted
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 1000, batch_size: 4, log_interval: 10, eval_interval: 100, checkpoint_interval: 0}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 1
report: {baseline: pre}
"""


def _parents(uri, study="preempted"):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study).experiment_id
    return client.search_runs([experiment], "tags.`ablate.kind` = 'study'")


def _wait_for(condition, process, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def _trained_steps(uri):
    """Per arm run MLflow holds, the last step it has a training loss of."""
    client = MlflowClient(uri)
    if client.get_experiment_by_name("preempted") is None:
        return []
    return [max((m.step for m in client.get_metric_history(r.info.run_id, "train_loss")), default=0)
            for r in arm_runs(uri, "preempted")]


def _workers_of(parent_pid):
    """Live `ablate worker` processes whose parent was `parent_pid` (or init, once orphaned)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            environ = open(f"/proc/{entry}/environ", "rb").read()
        except OSError:
            continue
        if b"worker" in command and f"ABLATE_PARENT_PID={parent_pid}".encode() in environ:
            found.append(int(entry))
    return found


def test_sigterm_checkpoints_the_run_ends_the_parent_killed_and_exits_143(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    # checkpoint_interval 0: before the stop, no checkpoint exists at all
    _wait_for(lambda: tmp_path.joinpath("mlflow.db").exists() and any(s >= 200 for s in _trained_steps(uri)), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    [run] = arm_runs(uri, "preempted")
    assert run.info.status == "KILLED" and run.data.tags["state"] == "interrupted"
    assert [p.info.status for p in _parents(uri)] == ["KILLED"]
    assert list(tmp_path.glob("runs/preempted/*/checkpoint.pt")), "the stop wrote a checkpoint"
    FAULTS["runs interrupted"] += 1
    FAULTS["stop signals honoured"] += 1

    resumed = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    runs = {r.data.tags["arm"]: r for r in arm_runs(uri, "preempted")}
    assert runs["pre"].info.run_id == run.info.run_id and runs["pre"].data.tags["state"] == "finished"
    assert runs["pre"].data.metrics["steps_trained"] <= 1000 - 200, "it resumed from the stop's checkpoint"
    FAULTS["runs recovered"] += 1


def test_sigterm_to_a_jobs_2_parent_stops_both_workers_cleanly_and_orphans_none(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri, "--jobs", "2", cold=True)
    _wait_for(lambda: tmp_path.joinpath("mlflow.db").exists() and len(_trained_steps(uri)) == 2
              and min(_trained_steps(uri)) >= 50, process)
    workers = _workers_of(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert _workers_of(process.pid) == [], "a worker trains on without its parent"
    runs = arm_runs(uri, "preempted")
    assert sorted(r.data.tags["state"] for r in runs) == ["interrupted", "interrupted"]
    assert {r.info.status for r in runs} == {"KILLED"} and [p.info.status for p in _parents(uri)] == ["KILLED"]
    assert len(list(tmp_path.glob("runs/preempted/*/checkpoint.pt"))) == 2, "each worker checkpointed its run"
    FAULTS["runs interrupted"] += 2
    FAULTS["stop signals honoured"] += 3


def test_a_killed_parent_stops_its_workers_and_the_next_run_ends_its_parent_run(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("steps: 1000", "steps: 300"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri, "--jobs", "2", cold=True)
    _wait_for(lambda: tmp_path.joinpath("mlflow.db").exists() and len(_trained_steps(uri)) == 2
              and min(_trained_steps(uri)) >= 20, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.time() + 120
    while _workers_of(process.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _workers_of(process.pid) == [], "the workers outlived their killed parent"
    assert {r.data.tags["state"] for r in arm_runs(uri, "preempted")} == {"interrupted"}, "they stopped cleanly"
    # checkpoint_interval 0: only a clean stop writes a checkpoint (the parent-death signal comes once per
    # exiting thread of the parent; its repeats must not turn into a second, immediate stop)
    assert len(list(tmp_path.glob("runs/preempted/*/checkpoint.pt"))) == 2
    assert [p.info.status for p in _parents(uri)] == ["RUNNING"]
    FAULTS["runs interrupted"] += 2

    again = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr
    assert "1 earlier executions of study 'preempted' died" in again.stderr
    parents = sorted(_parents(uri), key=lambda p: p.info.start_time)
    assert [p.info.status for p in parents] == ["KILLED", "FINISHED"]
    assert {r.data.tags["state"] for r in arm_runs(uri, "preempted")} == {"finished"}
    FAULTS["runs recovered"] += 2


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_stores_are_created_is_honoured(tmp_path, stop):
    (tmp_path / "study.yaml").write_text(STUDY.replace("steps: 1000", "steps: 20"))
    for delay in (0.5, 0.7, 0.9):
        for store in tmp_path.glob("*.db"):
            store.unlink()
        process = start_ablate(tmp_path, "run", "study.yaml")
        _wait_for(lambda: tmp_path.joinpath("mlflow.db").exists(), process, timeout=120)
        time.sleep(delay)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + stop, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr and "runs trained" not in stderr, stderr
        FAULTS["stop signals honoured"] += 1


STOP_AS_THE_TRIAL_BEATS = '''
import os, signal
import optuna.storages._heartbeat as heartbeat

start = heartbeat.HeartbeatThread.start


def start_then_stop(self):
    """The stop comes as Optuna's trial heartbeat thread has just started, before its block."""
    start(self)
    os.kill(os.getpid(), signal.SIGTERM)


heartbeat.HeartbeatThread.start = start_then_stop
'''


def test_a_stop_as_a_trial_starts_its_heartbeat_ends_the_process(tmp_path):
    """Optuna starts a trial's heartbeat, a thread the process waits for at exit, before the block
    that stops it: a stop raised in between left it beating and `ablate` never exited after saying
    it was interrupted. The stop is held until the run is claimed, then honoured."""
    (tmp_path / "study.yaml").write_text(STUDY.replace("steps: 1000", "steps: 20"))
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "sitecustomize.py").write_text(STOP_AS_THE_TRIAL_BEATS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "patch"),
                                                                       os.environ.get("PYTHONPATH")]))}
    process = start_ablate(tmp_path, "run", "study.yaml", cold=True, env=env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
    again = ablate(tmp_path, "run", "study.yaml")
    assert again.returncode == 0 and "2 runs trained" in again.stderr, again.stderr
    FAULTS["stop signals honoured"] += 1


SELF_STOPPING_PLACEMENT = '''
import os, signal, time
from pathlib import Path

from harness.registry import register
from variants.placement import PreNorm

sent = []


@register("placement", "self_stopping")
class SelfStopping(PreNorm):
    """Pre-norm that sends its own process a stop request while the model is being built."""

    def __init__(self, *args, **kwargs):
        if not sent:  # once: a second request stops at once
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
            time.sleep(0.2)  # a stop raised at once would end the build here
        super().__init__(*args, **kwargs)
        with open(Path(__file__).with_name("built.txt"), "a") as built:
            built.write("layer\\n")
'''


def test_a_stop_while_the_model_is_built_waits_for_the_build_then_stops(tmp_path):
    """Building the model imports Triton and torch._dynamo, whose native code calls back into
    Python: a stop raised inside such a callback aborted the process (SIGABRT, exit -6). A
    request during the build is honoured once the model and optimizer exist."""
    (tmp_path / "selfstop.py").write_text(SELF_STOPPING_PLACEMENT)
    study = STUDY.replace("grid: {model.placement: [pre, post]}", "grid: {model.placement: [pre, self_stopping]}")
    (tmp_path / "study.yaml").write_text("plugins: [selfstop.py]\n" + study.replace("steps: 1000", "steps: 20"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    stopped = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert stopped.returncode == 143, stopped.stderr
    assert "Traceback" not in stopped.stderr and "interrupted (SIGTERM)" in stopped.stderr, stopped.stderr
    assert (tmp_path / "built.txt").read_text() == "layer\n" * 2, "the build went on to its end"
    runs = {r.data.tags["arm"]: r.data.tags["state"] for r in arm_runs(uri, "preempted")}
    assert runs.get("self_stopping") == "interrupted", runs
    FAULTS["stop signals honoured"] += 1
