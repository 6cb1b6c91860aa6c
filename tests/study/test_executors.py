"""How runs execute and how seeds are added are interfaces of their own: a new launcher or
stopping rule plugs into Study.run without editing harness/study/study.py."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from harness import Study
from harness.config.study import SeedRange
from harness.study.executors import Executor, Inline, LocalWorkers, PlanOnly, local_executor
from harness.study.seed_policy import FixedSeeds, SequentialSeeds

STUDY = """
name: executors
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 8, batch_size: 4, log_interval: 4, eval_interval: 8}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 2
report: {baseline: pre}
"""


class Recording(Executor):
    """A toy launcher: it trains the queue through a worker loop of its own (each queued run
    claimed and trained here) and records what the study asked of it."""

    def __init__(self):
        self.calls = []

    def start(self, study):
        self.calls.append("start")

    def train(self, study):
        self.calls.append(f"train {len(study.runs)} runs")
        Inline().train(study)

    def stop(self):
        self.calls.append("stop")


class Stops(Recording):
    def train(self, study):
        super().train(study)
        raise KeyboardInterrupt


def _study(tmp_path: Path) -> Study:
    (tmp_path / "study.yaml").write_text(STUDY)
    return Study.open(tmp_path / "study.yaml", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                      storage=f"sqlite:///{tmp_path}/optuna.db", runs_dir=tmp_path / "runs",
                      reports_dir=tmp_path / "reports")


def test_a_new_executor_plugs_in_without_editing_the_study(tmp_path):
    executor = Recording()
    summary = _study(tmp_path).run(executor=executor)
    assert executor.calls == ["start", "train 4 runs"]
    assert list(summary["arm"]) == ["pre", "post"] and list(summary["seeds"]) == [2, 2]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("executors").experiment_id],
                              "tags.`ablate.kind` = 'arm_run'")
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 4
    assert (tmp_path / "reports" / "executors" / "report.md").exists()


def test_an_executor_is_stopped_when_the_study_is(tmp_path):
    executor = Stops()
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path).run(executor=executor)
    assert executor.calls == ["start", "train 4 runs", "stop"]


def test_an_executor_that_trains_elsewhere_only_plans(tmp_path):
    class Elsewhere(Recording):
        trains_here = False

    executor = Elsewhere()
    assert _study(tmp_path).run(executor=executor) is None
    assert executor.calls == ["start"]
    assert set(_study(tmp_path).status().runs["state"]) == {"queued"}


def test_opening_a_study_resolves_nothing(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("data: {val_windows: 4}",
                                                       "data: {dataset: text, path: missing.txt}"))
    study = Study.open(tmp_path / "study.yaml", runs_dir=tmp_path / "runs")  # the data is read on demand
    assert study.name == "executors" and not (tmp_path / "runs").exists()
    with pytest.raises(Exception, match="missing.txt"):
        study.check()
    by_name = Study.open("executors", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(Exception, match="given by name"):
        by_name.spec  # noqa: B018


def test_the_command_line_executors():
    assert isinstance(local_executor(1), Inline) and isinstance(local_executor(0), PlanOnly)
    assert isinstance(local_executor(3), LocalWorkers) and local_executor(3).jobs == 3


def test_sequential_seeds_add_one_to_each_unsettled_arm_and_the_baseline():
    policy = SequentialSeeds(SeedRange(min=2, max=4), baseline="pre")
    summary = pd.DataFrame({"arm": ["pre", "a", "b"], "failed": [0, 0, 0], "unfinished": [0, 0, 0],
                            "settled": [True, False, True]})
    assert policy.next_counts(summary, {"pre": 2, "a": 2, "b": 2}) == {"pre": 3, "a": 3, "b": 2}
    assert policy.next_counts(summary, {"pre": 4, "a": 4, "b": 2}) is None  # at its most seeds
    assert policy.next_counts(summary.assign(failed=[0, 1, 0]), {"pre": 2, "a": 2, "b": 2}) is None
    assert FixedSeeds().next_counts(summary, {"pre": 2}) is None
