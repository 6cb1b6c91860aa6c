"""A study on a machine that other work is using, and reporting paths that fail: the slowdown
notice on every run of one process, a stderr nobody reads any more, a figure that cannot be
drawn. None of them may stop a study: each is at most one warning line, and every run trains,
is tracked and is reported."""

import os
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests import warm
from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs

PLUGIN = Path(__file__).parents[1] / "fixtures" / "stalling_data.py"

# three runs in one process; each stalls after 40 of its 80 steps
STUDY = f"""
name: busy
plugins: [{PLUGIN}]
base:
  model: {{n_layer: 1, d_model: 16, n_head: 2, context_length: 16}}
  train: {{steps: 80, batch_size: 4, log_interval: 5, eval_interval: 40}}
data: {{dataset: {{name: stalling, stall_after: 40, stall_s: 0.05}}, val_windows: 4}}
seeds: 3
"""


def _folder(tmp_path, study=STUDY):
    (tmp_path / "study.yaml").write_text(study)
    return f"sqlite:///{tmp_path}/mlflow.db"


def _finished_runs(uri, study="busy"):
    return [run for run in arm_runs(uri, study) if run.info.status == "FINISHED"]


def test_the_slowdown_notice_on_the_second_and_third_run_of_a_process_stops_nothing(tmp_path):
    uri = _folder(tmp_path)
    result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri,
                    env={**os.environ, "ABLATE_SLOWDOWN_PATIENCE": "0.5"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    runs = _finished_runs(uri)
    assert len(runs) == 3
    assert all("their usual time" in run.data.tags.get("slowdown", "") for run in runs), "every run was slowed"
    assert result.stderr.count("their usual time") == 3, result.stderr
    report = (tmp_path / "reports" / "busy" / "report.md").read_text()
    assert report.count(" (slowed)") == 2 * 3, "each run's tokens/s and wall time are marked"
    FAULTS["reporting failures survived"] += 3  # a slowdown notice on each run of the process


def test_a_stderr_that_nobody_reads_any_more_stops_nothing(tmp_path):
    """`ablate run study.yaml 2>&1 | head -1`: the pipe closes after the first line."""
    uri = _folder(tmp_path)
    process = subprocess.Popen([*warm.command(), "run", "study.yaml", "--tracking-uri", uri], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ABLATE_SLOWDOWN_PATIENCE": "0.5"})
    process.stderr.readline()
    process.stderr.close()
    stdout, _ = process.communicate(timeout=600)
    assert process.returncode == 0, stdout
    assert len(_finished_runs(uri)) == 3
    assert (tmp_path / "reports" / "busy" / "report.md").is_file()
    FAULTS["reporting failures survived"] += 1


def test_a_figure_that_cannot_be_drawn_is_a_warning_and_the_report_is_written(tmp_path):
    uri = _folder(tmp_path, STUDY.replace("stall_s: 0.05", "stall_s: 0"))
    (tmp_path / "reports" / "busy" / "curves.png").mkdir(parents=True)  # a folder where the figure goes
    result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "warning:" in result.stderr and "curves.png" in result.stderr
    assert (tmp_path / "reports" / "busy" / "report.md").is_file()
    assert (tmp_path / "reports" / "busy" / "final_loss.png").is_file()
    parent = MlflowClient(uri).get_run(_finished_runs(uri)[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    FAULTS["reporting failures survived"] += 1
