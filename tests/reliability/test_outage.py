"""The MLflow tracking server goes away in the middle of a study: training goes on, what the
server could not take is kept beside the checkpoints, and it all arrives once the server is
back. A real `mlflow server` is killed and restarted on the same port and database."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import free_port
from tests.faults import FAULTS
from tests.reliability.conftest import arm_runs, lost_in, start_ablate, two_run_study

STUDY = two_run_study("outage")


class TrackingServer:
    def __init__(self, folder, port):
        self.folder, self.port, self.process = folder, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self):
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
                   "--artifacts-destination", str(self.folder / "artifacts")]
        # a tracking server as ablate's users run one: no MLflow job runner (GenAI jobs) beside it
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True,
                                        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)  # the server and its workers, as in a crash
        self.process.wait()


@pytest.fixture
def server(tmp_path):
    server = TrackingServer(tmp_path, free_port())
    server.start()
    yield server
    if server.process.poll() is None:
        server.kill()


def _kept_since(folder, moment) -> bool:
    """Whether a run wrote its unsent records after `moment` (it rewrites them at checkpoints)."""
    for path in folder.glob("runs/outage/*/unsent_tracking.json"):
        try:
            if path.stat().st_mtime > moment:
                return True
        except FileNotFoundError:  # sent and removed meanwhile
            pass
    return False


def _wait_for(condition, process, seconds=300):
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_training_goes_on_through_an_outage_and_every_point_arrives(tmp_path, server):
    (tmp_path / "study.yaml").write_text(STUDY)
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", server.uri)
    _wait_for(lambda: list(tmp_path.glob("runs/outage/*/checkpoint.pt")), process)  # the first run is under way
    server.kill()
    killed_at = time.time()
    # training goes on; at its next checkpoint the run keeps what the server did not take
    _wait_for(lambda: _kept_since(tmp_path, killed_at), process)
    checkpoints_while_down = len(list(tmp_path.glob("runs/outage/*/checkpoint.pt")))
    server.start()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "does not answer" in err and "Traceback" not in err
    assert not list(tmp_path.glob("runs/outage/*/unsent_tracking.json")), "kept records were not sent"

    runs = arm_runs(server.uri, "outage")
    assert sorted(run.data.tags["arm"] for run in runs) == ["post", "pre"]
    assert all(run.data.tags["state"] == "finished" and run.info.status == "FINISHED" for run in runs)
    lost = lost_in(server.uri, runs)
    FAULTS["runs interrupted"] += 1
    FAULTS["runs recovered"] += 1
    FAULTS["metric points lost"] += lost
    assert lost == 0
    assert checkpoints_while_down >= 1 and (tmp_path / "reports" / "outage" / "report.md").exists()


def test_a_server_still_down_at_the_end_leaves_the_records_on_disk_for_the_next_run(tmp_path, server):
    (tmp_path / "study.yaml").write_text(STUDY)
    env = {**os.environ, "ABLATE_TRACKING_PATIENCE": "5"}
    process = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", server.uri, env=env)
    _wait_for(lambda: list(tmp_path.glob("runs/outage/*/checkpoint.pt")), process)
    server.kill()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert f"the MLflow tracking store {server.uri} has not answered" in err and "Traceback" not in err
    kept = list(tmp_path.glob("runs/outage/*/unsent_tracking.json"))
    assert len(kept) == 1 and "records are kept in" in err and str(kept[0].relative_to(tmp_path)) in err

    server.start()
    again = start_ablate(tmp_path, "run", "study.yaml", "--tracking-uri", server.uri)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "sent the tracking records that 1 runs kept" in err
    runs = arm_runs(server.uri, "outage")
    assert len(runs) == 2 and all(run.data.tags["state"] == "finished" for run in runs)
    lost = lost_in(server.uri, runs)
    FAULTS["runs interrupted"] += 1
    FAULTS["runs recovered"] += 1
    FAULTS["metric points lost"] += lost
    assert lost == 0
