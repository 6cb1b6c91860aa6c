"""The first `ablate run` in a folder creates its stores (mlflow.db, optuna.db): a kill while it
does so, or a second first run started beside it, must not leave a store no later run can open."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, start_ablate

STUDY = """
name: first
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 10, batch_size: 2, eval_interval: 10}
data: {val_windows: 2}
grid: {model.placement: [pre, post]}
seeds: 1
"""


def store_files(folder):
    return [p for p in folder.iterdir() if "mlflow.db" in p.name or "optuna.db" in p.name]


@pytest.mark.parametrize("delay", [0.4, 0.9])  # each broke the store before it was created whole
def test_a_kill_while_the_first_run_creates_its_stores_leaves_nothing_broken(tmp_path, delay):
    (tmp_path / "study.yaml").write_text(STUDY)
    process = start_ablate(tmp_path, "run", "study.yaml")
    deadline = time.time() + 120
    while not store_files(tmp_path):  # MLflow's or Optuna's schema is being created now
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    FAULTS["first runs killed while creating their stores"] += 1

    again = ablate(tmp_path, "run", "study.yaml")
    assert again.returncode == 0, again.stderr
    assert "2 runs trained" in again.stderr or "1 runs trained" in again.stderr, again.stderr
    assert sorted(p.name for p in store_files(tmp_path)) == ["mlflow.db", "optuna.db"], "a private file was left"


def test_two_first_runs_in_one_folder_both_succeed(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    first, second = (start_ablate(tmp_path, "run", "study.yaml") for _ in range(2))
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert sorted(p.name for p in store_files(tmp_path)) == ["mlflow.db", "optuna.db"]


MLFLOW_CREATES_ITS_STORE = ("import sys, time; from mlflow.tracking import MlflowClient; "
                            "time.sleep(float(sys.argv[1])); MlflowClient('sqlite:///mlflow.db').search_experiments()")


@pytest.mark.parametrize("delay", [0.5, 2.5, 3.0, 3.5])
def test_a_first_run_beside_another_program_creating_the_store_succeeds(tmp_path, delay):
    """`mlflow ui` (or a script) creating the same new store table by table while the first run
    starts: whichever comes second waits for the schema to be whole, never reports it broken."""
    (tmp_path / "study.yaml").write_text(STUDY)
    other = subprocess.Popen([sys.executable, "-c", MLFLOW_CREATES_ITS_STORE, str(delay)], cwd=tmp_path,
                             stderr=subprocess.PIPE, text=True)
    run = ablate(tmp_path, "run", "study.yaml")
    _, other_err = other.communicate(timeout=120)
    assert run.returncode == 0, run.stderr
    assert other.returncode == 0, other_err


def test_a_store_left_half_created_by_another_program_is_named_with_what_to_do(tmp_path):
    """An MLflow store whose creation another program abandoned (some tables, not all) is one
    clear message, exit 2, after a short wait for its creator."""
    (tmp_path / "study.yaml").write_text(STUDY)
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    with sqlite3.connect(tmp_path / "mlflow.db") as store:  # a creator stopped before its last table and its stamp
        store.execute("DROP TABLE datasets")
        store.execute("DELETE FROM alembic_version")
    result = ablate(tmp_path, "run", "study.yaml", env={**os.environ, "ABLATE_TRACKING_PATIENCE": "2"})
    assert result.returncode == 2, result.stderr
    assert "is half-created" in result.stderr and "move the file away" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
