"""Verdicts that cannot be silently wrong, met as a user meets them: a report covers one
plan, no arm vanishes, every seed counts, edited plugin code is trained again, an
undertrained arm is flagged, and seeds are added only while a verdict is unsettled."""

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness import Study
from harness.errors import AblateError
from harness.registry import lookup
from harness.training.trainer import Trainer

from tests import warm

FIXTURES = Path(__file__).parents[1] / "fixtures"
BASE = """
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 60, batch_size: 8, log_interval: 10, eval_interval: 30, lr: 3.0e-3}
data: {val_windows: 32}
"""


def _study(folder: Path, text: str, *overrides: str) -> Study:
    (folder / "study.yaml").write_text(text)
    return Study.load(folder / "study.yaml", list(overrides), tracking_uri=f"sqlite:///{folder}/mlflow.db",
                      storage=f"sqlite:///{folder}/optuna.db", runs_dir=folder / "runs",
                      reports_dir=folder / "reports")


def _report(folder: Path, name: str) -> str:
    return (folder / "reports" / name / "report.md").read_text()


def test_a_changed_setting_is_a_new_plan_and_the_old_runs_are_never_pooled(tmp_path):
    text = "name: replan\n" + BASE + "grid: {model.placement: [pre, post]}\nseeds: 2\n"
    first = _study(tmp_path, text)
    first_summary = first.run()
    first_results = pd.read_csv(tmp_path / "reports" / "replan" / "results.csv")
    second = _study(tmp_path, text, "base.train.steps=40")
    summary = second.run()

    results = pd.read_csv(tmp_path / "reports" / "replan" / "results.csv")
    assert len(results) == 4 and sorted(results["seed"]) == [0, 0, 1, 1], "each seed once per arm"
    assert not set(results["run_key"]) & set(first_results["run_key"])
    assert list(summary["planned"]) == [2, 2] and summary.loc[1, "test"] == "paired t"
    report = _report(tmp_path, "replan")
    assert "4 runs of other plans of this study are left out" in report
    assert "steps = 40" in report, "the changed setting is a setting of this plan, shared by its arms"

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parents = client.search_runs([client.get_experiment_by_name("replan").experiment_id],
                                 "tags.`ablate.kind` = 'study'", order_by=["attributes.start_time ASC"])
    earlier = second.report(plan=parents[0].info.run_id)
    pd.testing.assert_frame_equal(earlier, first_summary)
    with pytest.raises(AblateError, match="no execution nope in this study"):
        second.report(plan="nope")


AA = "name: aa\n" + BASE + """
arms:
  - name: control
  - name: control_again
  - name: gelu_spelled_out
    set: {model.mlp: {name: gelu, hidden_ratio: 4}}
  - name: rms
    set: {model.norm: rmsnorm}
seeds: 2
report: {baseline: control}
"""


def test_arms_that_resolve_to_the_same_runs_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(AblateError, match="arms 'control' and 'control_again' resolve to the same configuration") as err:
        _study(tmp_path, AA)
    assert "A/A control" in str(err.value) and "seeds" in str(err.value)
    with pytest.raises(AblateError, match="arms 'control' and 'gelu_spelled_out' resolve to the same configuration"):
        _study(tmp_path, AA.replace("  - name: control_again\n", ""))
    assert not (tmp_path / "mlflow.db").exists()


def test_an_aa_control_with_seeds_of_its_own_keeps_every_arm(tmp_path):
    text = AA.replace("  - name: control_again\n", "  - name: control_again\n    seeds: [100, 101]\n")
    text = text.replace("  - name: gelu_spelled_out\n    set: {model.mlp: {name: gelu, hidden_ratio: 4}}\n", "")
    summary = _study(tmp_path, text).run().set_index("arm")
    assert list(summary.index) == ["control", "control_again", "rms"] and (summary["seeds"] == 2).all()
    assert summary.loc["control_again", "test"] == "Welch t" and summary.loc["rms", "test"] == "paired t"


def test_a_diverged_seed_makes_its_arm_unstable(tmp_path):
    text = "name: unstable\n" + BASE + f"plugins: [{FIXTURES / 'unstable_init.py'}]\n" + """arms:
  - name: stable
  - name: fragile
    set: {model.init: unstable_on_seed_1}
seeds: 3
"""
    summary = _study(tmp_path, text).run().set_index("arm")
    assert summary.loc["fragile", "diverged"] == 1 and summary.loc["fragile", "seeds"] == 2
    assert summary.loc["fragile", "verdict"].startswith("unstable: 1 of 3 seeds diverged")
    assert "unstable: 1 of 3 seeds diverged" in _report(tmp_path, "unstable")


def test_an_edited_plugin_is_trained_again_and_its_code_is_logged(tmp_path):
    shutil.copy(FIXTURES / "unstable_init.py", tmp_path)
    (tmp_path / "study.yaml").write_text("""name: plugin_edit
plugins: [unstable_init.py]
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32, init: unstable_on_seed_1}
  train: {steps: 20, batch_size: 8, log_interval: 10, eval_interval: 10}
data: {val_windows: 16}
seeds: [0]
""")

    def ablate_run():
        result = subprocess.run([*warm.command(), "run", "study.yaml"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "1 runs planned, 1 queued" in ablate_run()
    plugin = tmp_path / "unstable_init.py"
    plugin.write_text(plugin.read_text().replace("else 0.02", "else 0.03"))
    assert "1 runs planned, 1 queued" in ablate_run(), "the edited code is another run, trained again"

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("plugin_edit").experiment_id],
                              "tags.`ablate.kind` = 'arm_run'", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and runs[0].data.tags["run_key"] != runs[1].data.tags["run_key"]
    for run, std in zip(runs, ("0.02", "0.03")):
        logged = client.download_artifacts(run.info.run_id, "plugins/init.unstable_on_seed_1/unstable_init.py",
                                           str(tmp_path / run.info.run_id))
        assert f"else {std}" in Path(logged).read_text()
        assert run.data.params["sources.init.unstable_on_seed_1"].startswith("sha256:")
        plugins = run.data.tags["ablate.plugins"]
        assert plugins.startswith("init.unstable_on_seed_1=") and "unstable_init.py" in plugins
        assert plugins.endswith(run.data.params["sources.init.unstable_on_seed_1"])
    assert "1 runs of other plans of this study are left out" in _report(tmp_path, "plugin_edit")


def test_a_plugin_edited_in_a_notebook_is_imported_again_with_its_new_identity(tmp_path):
    plugin = tmp_path / "notebook_init.py"
    plugin.write_text((FIXTURES / "unstable_init.py").read_text().replace("unstable_on_seed_1", "notebook_init"))
    text = f"name: notebook\nplugins: [{plugin}]\n" + BASE + "seeds: [0]\n"
    text = text.replace("context_length: 32}", "context_length: 32, init: notebook_init}")
    before = _study(tmp_path, text).runs[0]
    plugin.write_text(plugin.read_text().replace("else 0.02", "else 0.03"))
    after = _study(tmp_path, text).runs[0]
    assert after.key() != before.key()
    assert "else 0.03" in lookup("init", "notebook_init").source_text


def test_an_undertrained_arm_is_flagged_beside_its_verdict(tmp_path):
    text = "name: short\n" + BASE + "grid: {train.lr: [3.0e-3, 1.0e-6]}\nseeds: 2\n"
    summary = _study(tmp_path, text, "base.train.steps=20").run().set_index("arm")
    assert summary.loc["1e-06", "flag"].startswith("has not learned: not below the unigram reference")
    assert "**has not learned" in _report(tmp_path, "short")


def test_seeds_are_added_only_while_a_verdict_is_unsettled(tmp_path):
    text = "name: adaptive\n" + BASE + """arms:
  - name: base
  - name: frozen
    set: {train.lr: 1.0e-7}
  - name: other_init
    set: {model.init: normal}
seeds: {min: 3, max: 5}
"""
    study = _study(tmp_path, text)
    assert len(study.runs) == 9 and len(study.possible_runs()) == 15
    summary = study.run().set_index("arm")
    assert summary.loc["frozen", "planned"] == 3 and summary.loc["frozen", "verdict"].endswith("worse")
    other = summary.loc["other_init", "planned"]
    assert other == 5 or summary.loc["other_init", "settled"], "an unsettled arm runs to the most seeds"
    assert summary.loc["base", "planned"] == max(3, other), "the baseline pairs with every arm's seeds"
    report = _report(tmp_path, "adaptive")
    assert "group-sequential design" in report
    _, plan = study.tracker.plan(study.tracker.experiment_id("adaptive"))
    assert (plan.sequential.min, plan.sequential.max) == (3, 5) and len(plan.runs) == 3 + other + max(3, other)


def test_dry_run_counts_what_is_finished_and_estimates_the_rest(tmp_path):
    text = "name: dry\n" + BASE + "grid: {model.placement: [pre, post]}\nseeds: 2\n"
    study = _study(tmp_path, text)
    assert list(study.estimate()["finished"]) == [0, 0] and not (tmp_path / "mlflow.db").exists()
    study.run()
    plan = _study(tmp_path, text, "seeds=3").estimate()
    assert list(plan["runs"]) == [3, 3] and list(plan["finished"]) == [2, 2]


def test_an_arm_with_another_batch_size_is_validated_on_the_same_text(tmp_path):
    text = "name: batches\n" + BASE + "grid: {train.batch_size: [4, 16]}\nseeds: 1\n"
    small, large = _study(tmp_path, text).runs
    assert small.train.batch_size != large.train.batch_size
    trainers = [Trainer(spec, tmp_path / spec.arm) for spec in (small, large)]
    assert [len(t.eval_batches) for t in trainers] == [8, 2]
    windows = [torch.cat([x for x, _ in trainer.eval_batches]) for trainer in trainers]
    assert torch.equal(*windows)
