"""`ablate run` end to end: MLflow holds the study, a re-run trains nothing, the report is
rebuilt from MLflow alone and its numbers agree with results.csv."""

import os
import re
import subprocess

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests import warm

STUDY = """
name: tiny_study
description: Two placements of a tiny model.
base:
  model: {n_layer: 2, d_model: 32, n_head: 2, context_length: 32, norm: rmsnorm, kernels: {rmsnorm: triton}}
  train: {steps: 20, batch_size: 4, log_interval: 5, eval_interval: 10}
data: {val_windows: 8}
grid: {model.placement: [pre, post]}
seeds: 2
report: {baseline: pre}
"""
METRICS = {"train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "step_time_ms", "tokens", "wall_time_s"}
TAGS = {"study", "arm", "seed", "run_key", "git_commit", "device", "attention_backend", "state", "kernel_rmsnorm"}


def ablate(*args, cwd, triton_interpreter=True):
    """`ablate`; without Triton's interpreter (a cold start) the Triton RMSNorm cannot run on
    the CPU, and the run says so."""
    env = {k: v for k, v in os.environ.items() if triton_interpreter or k != "TRITON_INTERPRET"}
    return subprocess.run([*warm.command(), *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    (folder / "study.yaml").write_text(STUDY)
    result = ablate("run", "study.yaml", "--tracking-uri", f"sqlite:///{folder}/mlflow.db", cwd=folder,
                    triton_interpreter=False)
    assert result.returncode == 0, result.stderr
    return folder


def _client(folder):
    return MlflowClient(f"sqlite:///{folder}/mlflow.db")


def _runs(folder):
    client = _client(folder)
    experiment = client.get_experiment_by_name("tiny_study")
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_holds_one_parent_and_a_child_per_arm_and_seed(study_dir):
    client, runs = _runs(study_dir)
    parents = [r for r in runs if r.data.tags.get("ablate.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("ablate.kind") == "arm_run"]
    assert len(parents) == 1 and len(children) == 4
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in children} == {
        ("pre", "0"), ("pre", "1"), ("post", "0"), ("post", "1")}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["state"] == "finished"
        assert METRICS <= set(child.data.metrics) and TAGS <= set(child.data.tags)
        assert child.data.tags["kernel_rmsnorm"] == "torch"
        assert "Triton kernels need CUDA" in child.data.tags["kernel_rmsnorm_fallbacks"]
        assert child.data.params["placement"] == child.data.tags["arm"]
        assert child.data.params["model.placement.name"] == child.data.tags["arm"]
        assert {"params", "flops_per_token", "unigram_loss", "bigram_loss", "train.lr"} <= set(child.data.params)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "model_summary.txt", "sample.txt"} <= artifacts
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) == 4
    report_files = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/results.csv", "report/summary.csv", "report/curves.png"} <= report_files


def test_every_run_logs_its_dataset_and_where_its_code_came_from(study_dir):
    import json

    from harness.config.data import DataConfig
    from harness.data import load_dataset

    sha256 = load_dataset(DataConfig()).metadata["sha256"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
    _, runs = _runs(study_dir)
    for run in runs:
        tags = run.data.tags
        assert tags["ablate_version"] and tags["mlflow.source.name"] == "ablate"
        if commit:  # ablate runs from its checkout here; an installed package knows no commit
            assert tags["mlflow.source.git.commit"] == commit
            assert tags["git_commit"].startswith(commit[:12])
        if tags["ablate.kind"] != "arm_run":
            continue
        [used] = run.inputs.dataset_inputs
        assert used.dataset.name == "pydoc" and sha256.startswith(used.dataset.digest)
        assert [(t.key, t.value) for t in used.tags] == [("mlflow.data.context", "training")]
        profile = json.loads(used.dataset.profile)
        assert profile["sha256"] == sha256 and profile["tokenizer"] == "char"
        assert profile["train_tokens"] > 10 * profile["val_windows"] and profile["val_tokens"] > 0
        assert json.loads(used.dataset.source)["source"] == "pydoc_data.topics"


def test_report_files_are_written(study_dir):
    folder = study_dir / "reports" / "tiny_study"
    for name in ("report.md", "results.csv", "summary.csv", "curves.png", "final_loss.png"):
        assert (folder / name).stat().st_size > 0
    assert len(pd.read_csv(folder / "results.csv")) == 4
    assert list(pd.read_csv(folder / "summary.csv")["arm"]) == ["pre", "post"]


def test_report_numbers_agree_with_results_csv(study_dir):
    folder = study_dir / "reports" / "tiny_study"
    results = pd.read_csv(folder / "results.csv")
    report = (folder / "report.md").read_text()
    for arm, losses in results[results["state"] == "finished"].groupby("arm")["val_loss"]:
        row = next(line for line in report.splitlines() if line.startswith(f"| {arm} ") and "±" in line)
        mean, std = map(float, re.search(r"([\d.]+) ± ([\d.]+)", row).groups())
        assert mean == pytest.approx(losses.mean(), abs=5e-5) and std == pytest.approx(losses.std(), abs=5e-5)
    for run in results.itertuples():
        assert f"{run.val_loss:.4f}" in report and run.run_key in report
    assert "post vs pre" in report and "unigram" in report and "bigram" in report


def test_running_again_trains_nothing_and_rewrites_the_same_report(study_dir):
    """A re-run with nothing new keeps the plan (and its execution id) the report covers; each
    used to record the plan again on its own parent run, and the report named that one."""
    folder = study_dir / "reports" / "tiny_study"
    before = {name: (folder / name).read_text() for name in ("summary.csv", "report.md")}
    for _ in range(2):
        again = ablate("run", "study.yaml", "--tracking-uri", f"sqlite:///{study_dir}/mlflow.db", cwd=study_dir,
                       triton_interpreter=False)
        assert again.returncode == 0, again.stderr
        assert "4 runs planned, 0 queued" in again.stderr and "0 runs trained" in again.stderr
        assert {name: (folder / name).read_text() for name in before} == before
    _, runs = _runs(study_dir)
    assert len([r for r in runs if r.data.tags.get("ablate.kind") == "arm_run"]) == 4


def test_report_is_rebuilt_from_mlflow_alone(study_dir, tmp_path):
    result = ablate("report", "tiny_study", "--tracking-uri", f"sqlite:///{study_dir}/mlflow.db",
                    "--reports-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rebuilt = pd.read_csv(tmp_path / "tiny_study" / "summary.csv")
    original = pd.read_csv(study_dir / "reports" / "tiny_study" / "summary.csv")
    pd.testing.assert_frame_equal(rebuilt, original)


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    result = ablate("run", "study.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 arms, 4 runs" in result.stdout and "4 runs, 0 finished already" in result.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("study,extra,message", [
    ("name: s\n  bad: 1\n", [], "not valid YAML"),
    (STUDY.replace("[pre, post]", "[pre, postt]"), [], "did you mean 'post'"),
    (STUDY + "data: {dataset: {name: text, path: missing.txt}}\n", [], "no file matches 'missing.txt'"),
    (STUDY, ["--tracking-uri", "http://127.0.0.1:9"], "http://127.0.0.1:9 is unreachable"),
    (STUDY, ["--tracking-uri", "mysql://user:secret@127.0.0.1:9/db"], "mysql://user:***@127.0.0.1:9/db"),
])
def test_bad_input_exits_2_with_one_message_before_anything_is_logged(tmp_path, study, extra, message):
    (tmp_path / "study.yaml").write_text(study)
    result = ablate("run", "study.yaml", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "runs").exists()
    if (tmp_path / "mlflow.db").exists():
        assert not MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()])


def test_a_metric_no_run_logged_is_refused_and_the_report_kept(tmp_path):
    """A misspelt report.metric rewrote report.md with every arm empty, and exited 0; it is now
    refused before anything runs, naming the metrics the runs log."""
    (tmp_path / "study.yaml").write_text(STUDY.replace("steps: 20,", "steps: 4,").replace("seeds: 2", "seeds: 1")
                                         .replace(", kernels: {rmsnorm: triton}", ""))
    first = ablate("run", "study.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "reports" / "tiny_study" / "report.md").read_text()
    again = ablate("run", "study.yaml", "--set", "report.metric=val_los", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "report.metric: arm 'pre' does not log 'val_los'; its runs log val_loss, train_loss, val_bpb" in again.stderr
    assert (tmp_path / "reports" / "tiny_study" / "report.md").read_text() == report
