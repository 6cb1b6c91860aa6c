"""The ledger reads as a study of its own: one Optuna study per plan, trials with the arm and
seed as params and user attributes, the metric named; optuna-dashboard serves it."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from harness import Study
from harness.study.ledger import ledger_names, open_storage
from tests.conftest import free_port

STUDY = """
name: readable
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 8, batch_size: 4, eval_interval: 4}
data: {val_windows: 4}
grid: {model.norm: [layernorm, rmsnorm]}
seeds: 2
"""


@pytest.fixture(scope="module")
def planned_twice(tmp_path_factory):
    """The study run, then run again with a changed setting: two plans."""
    folder = tmp_path_factory.mktemp("readable")
    (folder / "study.yaml").write_text(STUDY)
    stores = {"tracking_uri": f"sqlite:///{folder}/mlflow.db", "storage": f"sqlite:///{folder}/optuna.db",
              "runs_dir": folder / "runs", "reports_dir": folder / "reports"}
    Study.load(folder / "study.yaml", **stores).run()
    Study.load(folder / "study.yaml", ["base.train.steps=6"], **stores).run()
    return folder, stores["storage"]


def test_one_optuna_study_per_plan_with_arm_and_seed(planned_twice):
    _, storage = planned_twice
    names = ledger_names(open_storage(storage), "readable")
    assert len(names) == 2, names
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == ["val_loss"]
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert sorted((t.params["arm"], t.params["seed"]) for t in trials) == [
            ("layernorm", 0), ("layernorm", 1), ("rmsnorm", 0), ("rmsnorm", 1)]
        for trial in trials:
            assert trial.user_attrs["arm"] == trial.params["arm"]
            assert trial.user_attrs["seed"] == trial.params["seed"]
            assert len(trial.user_attrs["run_key"]) == 16
            assert 0 < trial.value < 6


def test_optuna_dashboard_serves_the_ledger(planned_twice):
    _, storage = planned_twice
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        summaries = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        plans = [s for s in summaries if ":tune:" not in s["study_name"]]
        assert len(plans) == 2
        study = _get_json(f"http://127.0.0.1:{port}/api/studies/{plans[0]['study_id']}?after=0", server)
        assert study["objective_names"] == ["val_loss"]
        assert {p["name"] for p in study["union_search_space"]} == {"arm", "seed"}
        assert len(study["trials"]) == 4 and all(t["state"] == "Complete" for t in study["trials"])
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output, output


def _get_json(url: str, server, timeout: float = 60):
    deadline = time.time() + timeout
    while True:
        assert server.poll() is None, server.communicate()[0]
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                return json.loads(response.read())
        except (ConnectionError, urllib.error.URLError):
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_a_plan_is_named_by_its_arms_not_by_its_seeds():
    from harness.config.study import StudySpec
    from harness.study.ledger import plan_id
    from harness.study.plan import expand

    def plan(**fields):
        return plan_id(expand(StudySpec(name="p", **fields)))

    grid = {"model.norm": ["layernorm", "rmsnorm"]}
    arms = [{"name": "ln", "set": {"model.norm": "layernorm"}}, {"name": "rms", "set": {"model.norm": "rmsnorm"}}]
    assert plan(grid=grid, seeds=[0, 1]) == plan(grid=grid, seeds=[0, 1, 2]), "seeds are added to the same plan"
    assert plan(grid=grid, seeds=[0, 1]) != plan(arms=arms, seeds=[0, 1]), "renamed arms are another plan"
    assert plan(grid=grid) != plan(grid={"model.norm": ["layernorm", "rmsnorm"]}, base={"train": {"steps": 7}})
