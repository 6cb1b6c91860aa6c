"""Staged studies: `init_from: {study, arm, seed}` starts each run from the final checkpoint of
another study's run, found through that study's ledger; a first stage that has not finished is
one message, and a first stage re-run with other settings makes the second stage's runs new."""

import hashlib

import pytest
from mlflow.tracking import MlflowClient

from harness import Study
from harness.errors import AblateError

PRETRAIN = """
name: pre
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 16}
  train: {steps: 8, batch_size: 8, log_interval: 4, eval_interval: 8}
data: {dataset: addition, digits: 2, val_examples: 16}
seeds: 2
"""
FINETUNE = """
name: tuned
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 16}
  train: {steps: 4, batch_size: 8, log_interval: 2, eval_interval: 4}
data: {dataset: addition, digits: 3, val_examples: 16}
arms:
  - name: scratch
  - name: full
    set: {train.init_from: {study: pre, arm: base, seed: same}}
  - name: first_seed
    set: {train.init_from: {study: pre, seed: 0}, train.lora: {rank: 2}}
seeds: 2
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the ledger's default storage is ./optuna.db
    (tmp_path / "pre.yaml").write_text(PRETRAIN)
    (tmp_path / "tuned.yaml").write_text(FINETUNE)
    return tmp_path


def _load(folder, name, overrides=()):
    return Study.load(folder / f"{name}.yaml", overrides=list(overrides), tracking_uri=f"sqlite:///{folder}/mlflow.db",
                      runs_dir=folder / "runs", reports_dir=folder / "reports")


def test_each_seed_starts_from_the_checkpoint_of_the_same_seed(folder):
    pretrain = _load(folder, "pre")
    pretrain.run()
    key = {spec.seed: spec.key() for spec in pretrain.runs}
    study = _load(folder, "tuned")
    starts = {(spec.arm, spec.seed): spec.train.init_from for spec in study.runs}
    assert starts[("scratch", 0)] is None and starts[("scratch", 1)] is None
    for seed in (0, 1):
        assert starts[("full", seed)] == str(folder / "runs" / "pre" / key[seed] / "checkpoint.pt")
        assert starts[("first_seed", seed)] == str(folder / "runs" / "pre" / key[0] / "checkpoint.pt")
    sources = {(spec.arm, spec.seed): spec.sources.get("init_from") for spec in study.runs}
    assert sources[("full", 0)] != sources[("full", 1)] and sources[("first_seed", 1)] == sources[("full", 0)]

    summary = study.run()
    assert list(summary["arm"]) == ["scratch", "full", "first_seed"] and list(summary["seeds"]) == [2, 2, 2]
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tuned").experiment_id], "tags.`ablate.kind` = 'arm_run'")
    recorded = {(r.data.tags["arm"], int(r.data.params["seed"])): r.data.params for r in runs}
    with open(starts[("full", 1)], "rb") as file:  # the run records which weights it started from
        assert recorded[("full", 1)]["init_from_checkpoint_sha256"] == hashlib.file_digest(file, "sha256").hexdigest()[:16]
    assert "init_from_checkpoint_sha256" not in recorded[("scratch", 1)]
    assert int(recorded[("first_seed", 0)]["params_trainable"]) < int(recorded[("full", 0)]["params_trainable"])


def test_a_first_stage_not_run_or_not_finished_is_one_message(folder):
    with pytest.raises(AblateError, match="starts from study 'pre', which has no plan in the storage"):
        _load(folder, "tuned")
    _load(folder, "pre", ["seeds=1"]).run()  # seed 1 is not in this plan
    with pytest.raises(AblateError, match=r"study 'pre' arm 'base' seed 1, which that study's plan does not have"):
        _load(folder, "tuned")
    (folder / "other.yaml").write_text(FINETUNE.replace("study: pre, arm: base", "study: pre, arm: big"))
    with pytest.raises(AblateError, match=r"arm 'big' of study 'pre', which has no such arm \(its arms: base\)"):
        Study.load(folder / "other.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db", runs_dir=folder / "runs")


def test_a_first_stage_run_again_with_other_settings_makes_new_second_stage_runs(folder):
    _load(folder, "pre").run()
    before = {(spec.arm, spec.seed): spec.key() for spec in _load(folder, "tuned").runs}
    _load(folder, "pre", ["base.train.steps=9"]).run()  # a new plan of the first stage: new checkpoints
    after = {(spec.arm, spec.seed): spec.key() for spec in _load(folder, "tuned").runs}
    assert before[("scratch", 0)] == after[("scratch", 0)]
    assert all(before[run] != after[run] for run in before if run[0] != "scratch")
