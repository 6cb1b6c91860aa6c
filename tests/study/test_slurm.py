"""A study on a real SLURM cluster (Debian's slurm-wlm on this machine; .ci/run starts it with
.ci/slurm-cluster): `ablate run --launcher slurm` submits workers as a job array against a
PostgreSQL ledger; a cancelled worker's run is resumed by the other; one data-parallel run
spans two SLURM tasks with torchrun on gloo."""

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from harness.training.checkpoint import load_checkpoint
from tests import warm
from tests.conftest import free_port, ledger_study
from tests.faults import FAULTS

STUDY = """
name: on_slurm
base:
  model: {n_layer: 2, d_model: 64, n_head: 4, context_length: 64}
  train: {steps: STEPS, batch_size: 8, log_interval: 50, eval_interval: STEPS, checkpoint_interval: 50}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 2
"""


@pytest.fixture(autouse=True)
def cluster():
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run a SLURM cluster (.ci/run starts one with .ci/slurm-cluster)")
        pytest.skip("no SLURM here: apt-get install slurm-wlm munge, then .ci/slurm-cluster")


def ablate(*args, cwd, env=None):
    return subprocess.run([*warm.command(), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _submit(folder, storage, tracking, steps, env=None):
    (folder / "study.yaml").write_text(STUDY.replace("STEPS", str(steps)))
    submitted = ablate("run", "study.yaml", "--launcher", "slurm", "--jobs", "2", "--slurm-time", "0:15:00",
                       "--storage", storage, "--tracking-uri", tracking, cwd=folder, env=env)
    assert submitted.returncode == 0, submitted.stderr
    assert "4 runs planned, 4 queued" in submitted.stderr
    return re.search(r"submitted 2 workers to SLURM as job array (\d+)", submitted.stderr).group(1)


def _tasks(array: str) -> list[str]:
    """The array's tasks SLURM still holds: 'JOBID STATE' lines."""
    listed = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True, text=True)
    return listed.stdout.split("\n") if listed.stdout.strip() else []


def _wait_until_gone(array: str, folder, timeout: float = 480) -> None:
    deadline = time.time() + timeout
    while _tasks(array):
        if time.time() > deadline:
            logs = "\n".join(p.read_text()[-2000:] for p in folder.glob("runs/on_slurm/slurm/*/*.err"))
            pytest.fail(f"SLURM workers still queued or running after {timeout} s:\n{logs}")
        time.sleep(2)


def _finished_runs(storage, tracking):
    trials = [t for t in ledger_study(storage, "on_slurm").get_trials() if not t.user_attrs.get("empty")]
    completed = Counter(t.user_attrs["run_key"] for t in trials if t.state.name == "COMPLETE")
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("on_slurm").experiment_id],
                              "tags.`ablate.kind` = 'arm_run'")
    assert len(completed) == 4 and set(completed.values()) == {1}, completed
    assert sorted(r.data.tags["run_key"] for r in runs) == sorted(completed), "one MLflow run per run"
    assert {r.data.tags["state"] for r in runs} == {"finished"}
    return trials, runs


def test_slurm_workers_train_every_run_once_and_keep_the_password_off_disk(tmp_path, databases):
    storage, tracking = databases
    array = _submit(tmp_path, storage, tracking, steps=100)
    _wait_until_gone(array, tmp_path)
    trials, runs = _finished_runs(storage, tracking)
    assert all(r.data.metrics["steps_trained"] == 100 for r in runs), "each run trained once, from the start"
    assert len({t.user_attrs["worker"] for t in trials}) >= 1
    reported = ablate("report", "on_slurm", "--tracking-uri", tracking, cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert "post vs pre" in (tmp_path / "reports" / "on_slurm" / "report.md").read_text()
    password = storage.split(":")[2].split("@")[0]
    for path in (tmp_path / "runs" / "on_slurm" / "slurm").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), f"the ledger's password is in {path}"


def test_a_cancelled_slurm_worker_has_its_run_resumed_by_the_other(tmp_path, databases):
    storage, tracking = databases
    env = {**os.environ, "ABLATE_HEARTBEAT_INTERVAL": "1", "ABLATE_HEARTBEAT_GRACE": "5"}
    array = _submit(tmp_path, storage, tracking, steps=800, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:  # both workers running, and each one's run has checkpointed
        running = [line.split()[0] for line in _tasks(array) if line.endswith("RUNNING")]
        if len(running) == 2 and len(list(tmp_path.glob("runs/on_slurm/*/checkpoint.pt"))) >= 2:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the workers did not both start: {_tasks(array)}")
    subprocess.run(["scancel", running[0]], check=True)
    _wait_until_gone(array, tmp_path)

    trials, runs = _finished_runs(storage, tracking)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1, "the cancelled worker stopped on scancel's SIGTERM and failed its trial"
    key = failed[0].user_attrs["run_key"]
    [retry] = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["run_key"] == key]
    assert retry.user_attrs["worker"] != failed[0].user_attrs["worker"]
    [resumed] = [r for r in runs if r.data.tags["run_key"] == key]
    assert 0 < resumed.data.metrics["steps_trained"] < 800, "continued from the cancelled worker's checkpoint"


def test_one_data_parallel_run_across_two_slurm_tasks(tmp_path):
    """The README's multi-node recipe: srun starts one torchrun per task (per node), which
    rendezvous at the first task's host; here both tasks share this machine."""
    (tmp_path / "run.yaml").write_text("name: ddp_slurm\nbase:\n  model: {n_layer: 2, d_model: 32, n_head: 2, "
                                       "context_length: 32}\n  train: {steps: 20, batch_size: 8, log_interval: 5, "
                                       "eval_interval: 10}\ndata: {val_windows: 8}\n")
    single = ablate("train", "run.yaml", "--out", "single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    recipe = (f"{sys.executable} -m torch.distributed.run --nnodes $SLURM_NTASKS --node_rank $SLURM_PROCID "
              f"--nproc_per_node 1 --master_addr 127.0.0.1 --master_port {free_port()} "
              "-m harness.cli train run.yaml --out parallel")
    spread = subprocess.run(["srun", "--ntasks", "2", "--cpus-per-task", "1", "--time", "10", "bash", "-c", recipe],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert spread.returncode == 0, spread.stderr[-3000:]
    one = load_checkpoint(next((tmp_path / "single").glob("ddp_slurm/*/checkpoint.pt")))
    two = load_checkpoint(next((tmp_path / "parallel").glob("ddp_slurm/*/checkpoint.pt")))
    assert (one["processes"], two["processes"]) == (1, 2)
    curve = [[entry["train_loss"] for entry in c["history"] if "train_loss" in entry] for c in (one, two)]
    assert len(curve[0]) == len(curve[1]) > 0 and curve[1] == pytest.approx(curve[0], rel=1e-4)


def test_a_slurm_worker_at_its_time_limit_checkpoints_and_queues_its_run_again(tmp_path, databases):
    """SLURM sends USR2 `--slurm-signal-delay` seconds before the time limit (up to a minute early,
    so a one-minute limit could signal a worker still importing torch, before it has a run):
    the worker checkpoints its run, marks it interrupted, puts it back in the queue and ends
    before SLURM kills it."""
    storage, tracking = databases
    (tmp_path / "study.yaml").write_text(STUDY.replace("STEPS", "100000"))
    submitted = ablate("run", "study.yaml", "--launcher", "slurm", "--jobs", "1", "--slurm-time", "2",
                       "--slurm-signal-delay", "30", "--storage", storage, "--tracking-uri", tracking, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    array = re.search(r"as job array (\d+)", submitted.stderr).group(1)
    _wait_until_gone(array, tmp_path, timeout=300)

    logs = "\n".join(p.read_text() for p in (tmp_path / "runs" / "on_slurm" / "slurm").rglob("*.out"))
    errors = "\n".join(p.read_text() for p in (tmp_path / "runs" / "on_slurm" / "slurm").rglob("*.err"))
    assert "stopped by SIGUSR2" in logs, logs + errors
    assert "DUE TO TIME LIMIT" not in errors, "the worker ended before SLURM had to kill it"
    client = MlflowClient(tracking)
    [run] = client.search_runs([client.get_experiment_by_name("on_slurm").experiment_id],
                               "tags.`ablate.kind` = 'arm_run'")
    assert run.info.status == "KILLED" and run.data.tags["state"] == "interrupted"
    assert list(tmp_path.glob(f"runs/on_slurm/{run.data.tags['run_key']}/checkpoint.pt"))
    trials = [t for t in ledger_study(storage, "on_slurm").get_trials() if t.user_attrs.get("run_key") ==
              run.data.tags["run_key"]]
    assert sorted(t.state.name for t in trials) == ["FAIL", "WAITING"], "its run is queued again"
    FAULTS["stop signals honoured"] += 1
