"""The Python API drives a study end to end, as a notebook would: load, estimate, run,
status, report, clean — everything the `ablate` commands do."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from harness import Study
from harness.errors import AblateError

ROOT = Path(__file__).parents[2]
STUDY = """
name: api_study
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 20, batch_size: 4, log_interval: 5, eval_interval: 10}
data: {val_windows: 8}
grid: {model.placement: [pre, post]}
seeds: 2
report: {baseline: pre}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the ledger's default storage is ./optuna.db
    (tmp_path / "study.yaml").write_text(STUDY)
    return tmp_path


def _load(folder, **options):
    return Study.load(folder / "study.yaml", overrides=["base.train.steps=16"],
                      tracking_uri=f"sqlite:///{folder}/mlflow.db", runs_dir=folder / "runs",
                      reports_dir=folder / "reports", **options)


def test_load_estimate_run_status_report_and_clean(folder):
    study = _load(folder)
    assert [(run.arm, run.seed, run.train.steps) for run in study.runs] == [
        ("pre", 0, 16), ("post", 0, 16), ("pre", 1, 16), ("post", 1, 16)]

    plan = study.estimate()
    assert list(plan["arm"]) == ["pre", "post"] and (plan["seconds_per_run"] > 0).all()
    assert (plan["tokens_per_run"] == 16 * 4 * 32).all()

    summary = study.run()
    assert list(summary["arm"]) == ["pre", "post"] and list(summary["seeds"]) == [2, 2]
    assert summary.loc[0, "verdict"] == "baseline" and re.match(r"[+-]\d\.\d{4} ± ", summary.loc[1, "verdict"])
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("api_study").experiment_id],
                              "tags.`ablate.kind` = 'arm_run'")
    assert len(runs) == 4 and {r.data.params["train.steps"] for r in runs} == {"16"}
    assert (folder / "reports" / "api_study" / "report.md").exists()

    status = study.status()
    assert set(status.runs["state"]) == {"finished"} and status.eta_seconds == 0
    assert list(status.arms["finished"]) == [2, 2] and list(status.arms["queued"]) == [0, 0]

    pd.testing.assert_frame_equal(study.report(), summary)

    checkpoints = sorted((folder / "runs" / "api_study").glob("*/checkpoint.pt"))
    assert len(checkpoints) == 4
    listed = study.clean(dry_run=True)
    assert set(checkpoints) <= set(listed.removed) and all(path.exists() for path in checkpoints)
    cleaned = study.clean()
    assert cleaned.bytes == listed.bytes > 0 and not any(path.exists() for path in checkpoints)
    assert not list((folder / "runs" / "api_study").iterdir()), "emptied run folders are removed"


def test_every_user_mistake_fails_at_load_before_any_store_is_touched(folder):
    (folder / "study.yaml").write_text(STUDY.replace("[pre, post]", "[pre, postt]"))
    with pytest.raises(AblateError, match="did you mean 'post'"):
        _load(folder)
    assert not (folder / "mlflow.db").exists() and not (folder / "optuna.db").exists()


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = next(block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "Study.load" in block)
    (tmp_path / "studies").mkdir()
    shutil.copy(ROOT / "studies" / "norm_placement.yaml", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    summary = namespace["summary"]
    assert list(summary["arm"]) == ["pre", "post"] and summary["seeds"].min() >= 2
    assert (tmp_path / "reports" / "norm_placement_quick" / "report.md").exists()
    assert not (tmp_path / "reports" / "norm_placement").exists(), "the quick look replaced the study's report"
