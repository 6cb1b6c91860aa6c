"""Studies shared by several workers through a PostgreSQL ledger (and MLflow store).

Needs a PostgreSQL server: $ABLATE_TEST_POSTGRES names a database where the user may
create databases (.ci/run starts one). Without it these tests skip, except in CI.
"""

import os
import signal
import subprocess
import time
from collections import Counter

from mlflow.tracking import MlflowClient

from tests import warm
from tests.conftest import ledger_study

STUDY = """
name: shared
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: STEPS, batch_size: 4, log_interval: 10, eval_interval: 50, checkpoint_interval: 20}
data: {val_windows: 4}
grid: {model.placement: [pre, post, sandwich]}
seeds: 2
"""


def ablate(*args, cwd, env=None, background=False):
    command = [*warm.command(), *args]
    if background:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _plan(folder, storage, tracking, steps):
    (folder / "study.yaml").write_text(STUDY.replace("STEPS", str(steps)))
    planned = ablate("run", "study.yaml", "--jobs", "0", "--storage", storage, "--tracking-uri", tracking, cwd=folder)
    assert planned.returncode == 0, planned.stderr
    assert "6 runs planned, 6 queued" in planned.stderr


def _ledger(storage):
    study = ledger_study(storage, "shared")
    return [t for t in study.get_trials() if not t.user_attrs.get("empty")]


def _mlflow_runs(tracking):
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("shared")
    return client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'arm_run'")


def _check_every_run_done_exactly_once(storage, tracking):
    trials = _ledger(storage)
    completed = Counter(t.user_attrs["run_key"] for t in trials if t.state.name == "COMPLETE")
    assert len(completed) == 6 and set(completed.values()) == {1}, completed
    runs = _mlflow_runs(tracking)
    assert sorted(r.data.tags["run_key"] for r in runs) == sorted(completed)
    assert {r.data.tags["state"] for r in runs} == {"finished"} and {r.info.status for r in runs} == {"FINISHED"}
    return trials, runs


def test_two_concurrent_workers_train_every_planned_run_exactly_once(tmp_path, databases):
    storage, tracking = databases
    _plan(tmp_path, storage, tracking, steps=40)
    # two workers started by hand on one machine share its cores, as a user would have them
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, os.cpu_count() // 2))}
    workers = [ablate("worker", "study.yaml", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path,
                      env=env, background=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    trials, _ = _check_every_run_done_exactly_once(storage, tracking)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers took runs"


def test_the_run_of_a_killed_worker_is_retried_by_another(tmp_path, databases):
    storage, tracking = databases
    _plan(tmp_path, storage, tracking, steps=200)
    env = {**os.environ, "ABLATE_HEARTBEAT_INTERVAL": "1", "ABLATE_HEARTBEAT_GRACE": "5"}
    doomed = ablate("worker", "study.yaml", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path,
                    env=env, background=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it mid-run: after its first checkpoint
        if list(tmp_path.glob("runs/shared/*/checkpoint.pt")):
            break
        time.sleep(0.2)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    survivor = ablate("worker", "study.yaml", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path, env=env)
    assert survivor.returncode == 0, survivor.stderr

    trials, runs = _check_every_run_done_exactly_once(storage, tracking)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1, "the killed worker's trial was failed by its stale heartbeat"
    retried = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["run_key"] == failed[0].user_attrs["run_key"]]
    assert retried[0].user_attrs["worker"] != failed[0].user_attrs["worker"]
    assert len(runs) == 6, "the retry continued the killed run's MLflow run instead of starting a second one"
