"""Local file faults are not outages: a folder that cannot be made. The study stops at once with
exit 2, naming the path; the run is marked failed in MLflow (never a second MLflow run for it);
nothing is waited for; the next run after the fix finishes the study. Made without root or a
small file system: a file where a folder must be (a disk that really fills, read-only folders
and a file-size limit are in test_file_faults.py)."""

import time

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs

STUDY = """
name: disk
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 20, batch_size: 2, eval_interval: 10}
data: {val_windows: 2}
grid: {model.placement: [pre, post]}
seeds: 1
report: {baseline: pre}
"""


def _study(folder):
    (folder / "study.yaml").write_text(STUDY)
    return f"sqlite:///{folder}/mlflow.db"


def _stopped_at_once(result, started, path):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert path in result.stderr, result.stderr
    assert "does not answer" not in result.stderr and time.time() - started < 120, "treated as an outage"


def test_a_file_where_the_runs_folder_must_be_stops_the_study_naming_it(tmp_path):
    uri = _study(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    started = time.time()
    result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    _stopped_at_once(result, started, "Not a directory: runs/disk/")
    assert "a file stands where a folder must be" in result.stderr
    assert not [r for r in arm_runs(uri, "disk") if r.info.status == "RUNNING"], "a run was left RUNNING"
    FAULTS["disk and permission faults"] += 1

    (tmp_path / "runs").unlink()
    again = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr
    assert sorted(r.data.tags["state"] for r in arm_runs(uri, "disk")) == ["finished", "finished"]
