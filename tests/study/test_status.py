"""`ablate status`: per arm what is finished, running (on which worker, how long since its
last heartbeat) and queued, with an ETA, read from the ledger and MLflow while a worker trains."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from tests import warm
from tests.conftest import ledger_study

STUDY = """
name: progress
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 10, batch_size: 4, log_interval: 5, eval_interval: 5}
data: {val_windows: 4}
arms:
  - name: quick
  - name: slow
    set: {train.steps: 20000, train.log_interval: 10, train.eval_interval: 1000}
  - name: later
    set: {train.steps: 12}
seeds: 1
"""


def ablate(folder, *args, background=False):
    env = {**os.environ, "COLUMNS": "200"}
    if background:  # cold: the test reads the worker's own pid in `ablate status`
        return subprocess.Popen([*warm.COLD, *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run([*warm.command(), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def worker_on_the_slow_run(tmp_path_factory):
    """A study whose first run finished, whose second is training, and whose third waits."""
    tmp_path = tmp_path_factory.mktemp("status")
    (tmp_path / "study.yaml").write_text(STUDY)
    planned = ablate(tmp_path, "run", "study.yaml", "--jobs", "0")
    assert planned.returncode == 0, planned.stderr
    worker = ablate(tmp_path, "worker", "study.yaml", background=True)
    ledger = ledger_study(f"sqlite:///{tmp_path}/optuna.db", "progress")
    deadline = time.time() + 240
    while time.time() < deadline:
        assert worker.poll() is None, worker.communicate()[1]
        slow = [t for t in ledger.get_trials() if t.user_attrs.get("arm") == "slow" and t.state.name == "RUNNING"]
        if slow and "progress" in slow[0].user_attrs:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the worker never reached the slow run")
    yield tmp_path, worker
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)


def _row(lines, first_cell):
    """The cells of the table row whose first cell is `first_cell`."""
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")[1:-1]] or [cell.strip() for cell in line.split("┃")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n" + "\n".join(lines))


def test_status_shows_a_finished_a_running_and_a_queued_run(worker_on_the_slow_run):
    folder, worker = worker_on_the_slow_run
    result = ablate(folder, "status", "study.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    split = next(i for i, line in enumerate(lines) if line.strip() == "running")
    arms, running = lines[:split], lines[split:]
    header = _row(arms, "arm")
    # at 80 columns every header is whole: the states no run is in are left out
    assert header[:4] == ["arm", "finished", "running", "queued"] and "interrupted" not in header, header
    counts = {arm: dict(zip(header, _row(arms, arm))) for arm in ("quick", "slow", "later")}
    assert (counts["quick"]["finished"], counts["quick"]["running"], counts["quick"]["queued"]) == ("1", "0", "0")
    assert (counts["slow"]["finished"], counts["slow"]["running"], counts["slow"]["queued"]) == ("0", "1", "0")
    assert (counts["later"]["finished"], counts["later"]["running"], counts["later"]["queued"]) == ("0", "0", "1")
    assert float(counts["quick"]["mean wall time (s)"]) > 0

    in_flight = dict(zip(_row(running, "arm"), _row(running, "slow")))
    assert in_flight["worker"] == f"{socket.gethostname()}:{worker.pid}", "the worker that holds the run"
    assert 0 <= float(in_flight["last heartbeat (s ago)"]) < 30, "seconds since the run last reported"
    assert 0 < float(in_flight["step"].replace(",", "")) < 20000 and in_flight["steps"] == "20,000"
    assert re.search(r"1 of 3 runs finished; ETA \d+\.\d min", result.stdout)


def test_status_by_name_reads_the_stores_alone(worker_on_the_slow_run):
    folder, _ = worker_on_the_slow_run
    result = ablate(folder, "status", "progress")
    assert result.returncode == 0, result.stderr
    assert "1 of 3 runs finished" in result.stdout


def test_status_of_a_study_never_run_says_so(tmp_path):
    result = ablate(tmp_path, "status", "nothing_here")
    assert result.returncode == 2 and "has not been run with these stores" in result.stderr
