"""Ctrl-C during `ablate run`: the run is checkpointed and marked KILLED, exit 130, and the
same command again resumes it to the curve an uninterrupted study gives."""

import signal
import subprocess
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests import warm
from tests.faults import FAULTS
from tests.reliability.conftest import lost_points

STUDY = """
name: interrupted
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 400, batch_size: 4, log_interval: 10, eval_interval: 50, checkpoint_interval: 50}
data: {val_windows: 4}
seeds: 1
"""


def _start(folder):
    command = [*warm.command(), "run", "study.yaml",
               "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _val_curve(folder):
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id],
                             "tags.`ablate.kind` = 'arm_run'")[0]
    return run, [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"),
                                                   key=lambda m: m.step)]


def test_ctrl_c_checkpoints_marks_killed_and_the_rerun_resumes_the_same_curve(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for folder in (whole, split):
        folder.mkdir()
        (folder / "study.yaml").write_text(STUDY)

    process = _start(split)
    deadline = time.time() + 240
    while not list(split.glob("runs/interrupted/*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr and "Traceback" not in stderr
    run, partial = _val_curve(split)
    assert run.info.status == "KILLED" and run.data.tags["state"] == "interrupted"
    assert 0 < len(partial) < 8
    FAULTS["runs interrupted"] += 1

    assert _start(split).wait(timeout=300) == 0
    assert _start(whole).wait(timeout=300) == 0
    resumed_run, resumed = _val_curve(split)
    _, uninterrupted = _val_curve(whole)
    assert resumed_run.info.run_id == run.info.run_id and resumed_run.info.status == "FINISHED"
    # the same curve; an evaluation may differ in the last float bits (BLAS paths depend on
    # where the batch lies in memory), training does not
    assert [step for step, _ in resumed] == [step for step, _ in uninterrupted] and len(resumed) == 8
    assert [v for _, v in resumed] == pytest.approx([v for _, v in uninterrupted], rel=1e-6, abs=0)
    results = pd.read_csv(split / "reports" / "interrupted" / "results.csv")
    assert list(results["state"]) == ["finished"]
    assert list(results["speed_caveat"]) == ["resumed"], "its tokens/s spans two attempts"
    assert " (resumed)" in (split / "reports" / "interrupted" / "report.md").read_text()
    lost = lost_points(f"sqlite:///{split}/mlflow.db", resumed_run, 400, 10, 50)
    FAULTS["runs recovered"] += 1
    FAULTS["metric points lost"] += lost
    assert lost == 0
