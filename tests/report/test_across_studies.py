"""Comparisons beyond one report: arm runs in MLflow (mean curve and 95% band per arm), a study
with `scales:` (a verdict per scale, and how the difference moves), and `ablate leaderboard`
over every study in one tracking store."""

import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from harness import Study
from harness.config.study import StudySpec
from harness.errors import AblateError
from harness.report.scales import trend

from tests import warm

BASE = """
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 12, batch_size: 4, eval_interval: 4}
data: {val_windows: 4}
grid: {model.norm: [layernorm, rmsnorm]}
seeds: 3
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two studies in one tracking store, one of them at four widths."""
    folder = tmp_path_factory.mktemp("across")
    stores = {"tracking_uri": f"sqlite:///{folder}/mlflow.db", "storage": f"sqlite:///{folder}/optuna.db",
              "runs_dir": folder / "runs", "reports_dir": folder / "reports"}
    (folder / "plain.yaml").write_text("name: plain\n" + BASE)
    (folder / "scaled.yaml").write_text("name: scaled\n" + BASE + "scales: {base.model.d_model: [16, 24, 32, 48]}\n"
                                        "report: {forecast: {at: {base.model.d_model: 96}}}\n")
    summaries = {name: Study.load(folder / f"{name}.yaml", **stores).run() for name in ("plain", "scaled")}
    return folder, summaries


def _client(folder):
    return MlflowClient(f"sqlite:///{folder}/mlflow.db")


def test_each_arm_is_a_run_with_its_mean_curve_band_and_verdict(store):
    folder, summaries = store
    client = _client(folder)
    experiment = client.get_experiment_by_name("plain").experiment_id
    seeds = client.search_runs([experiment], "tags.`ablate.kind` = 'arm_run'")
    arms = client.search_runs([experiment], "tags.`ablate.kind` = 'arm'")
    [parent] = client.search_runs([experiment], "tags.`ablate.kind` = 'study'")
    assert sorted(run.data.tags["arm"] for run in arms) == ["layernorm", "rmsnorm"]
    summary = summaries["plain"].set_index("arm")
    for run in arms:
        arm = run.data.tags["arm"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["verdict"] == summary.loc[arm, "verdict"]
        histories = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
                     for name in ("val_loss_mean", "val_loss_ci_low", "val_loss_ci_high")}
        assert sorted(histories["val_loss_mean"]) == [4, 8, 12]
        for step in (4, 8, 12):  # recomputed from the seeds' own curves
            values = np.array([next(m.value for m in client.get_metric_history(s.info.run_id, "val_loss")
                                    if m.step == step) for s in seeds if s.data.tags["arm"] == arm])
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            assert histories["val_loss_mean"][step] == pytest.approx(values.mean(), rel=1e-12)
            assert histories["val_loss_ci_low"][step] == pytest.approx(values.mean() - half, rel=1e-12)
            assert histories["val_loss_ci_high"][step] == pytest.approx(values.mean() + half, rel=1e-12)
        assert run.data.metrics["val_loss_final_mean"] == pytest.approx(summary.loc[arm, "mean"])
        if arm == "rmsnorm":
            assert run.data.metrics["val_loss_delta"] == pytest.approx(summary.loc[arm, "diff"])
            assert run.data.metrics["val_loss_p_adjusted"] == pytest.approx(summary.loc[arm, "p_adjusted"])

    rebuilt = subprocess.run([*warm.command(), "report", "plain", "--tracking-uri",
                              f"sqlite:///{folder}/mlflow.db", "--reports-dir", str(folder / "reports")],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = client.search_runs([experiment], "tags.`ablate.kind` = 'arm'")
    assert len(again) == 2 and not {r.info.run_id for r in again} & {r.info.run_id for r in arms}, \
        "a rebuilt report replaces the arm runs"


def test_a_study_with_scales_judges_every_scale_on_its_own(store):
    folder, summaries = store
    summary = summaries["scaled"]
    widths = (16, 24, 32, 48)
    assert list(summary["arm"]) == [f"{norm}@d_model={w}" for w in widths for norm in ("layernorm", "rmsnorm")]
    assert list(summary["baseline"]) == [f"layernorm@d_model={w}" for w in widths for _ in range(2)]
    assert list(summary["variant"]) == ["layernorm", "rmsnorm"] * 4
    small, large = summary.iloc[1], summary.iloc[7]
    assert small["training_flops"] < large["training_flops"]
    # each scale a family of its own: one comparison, so Holm leaves its p as it is
    assert small["p_adjusted"] == small["p"] and large["p_adjusted"] == large["p"]

    client = _client(folder)
    runs = client.search_runs([client.get_experiment_by_name("scaled").experiment_id],
                              "tags.`ablate.kind` = 'arm_run'")
    trained = {(r.data.tags["arm"], r.data.params["model.d_model"]) for r in runs}
    assert trained == {(f"{norm}@d_model={w}", str(w)) for w in widths for norm in ("layernorm", "rmsnorm")}
    report = (folder / "reports" / "scaled" / "report.md").read_text()
    assert "At `model.d_model` = 16:" in report and "At `model.d_model` = 32:" in report
    assert "## Across scales" in report and "![scaling](scaling.png)" in report
    assert (folder / "reports" / "scaled" / "scaling.png").stat().st_size > 10_000
    assert trend(summary[summary["variant"] == "rmsnorm"]) in report


def test_a_ladder_forecasts_its_verdicts_and_the_bench_checks_them_on_a_held_out_rung(store):
    """The report forecasts rmsnorm at d_model=96 from the four widths, with the compute
    multiplier and where each verdict settled; `ablate bench forecast` holds out the largest
    width, forecasts it from the three below and scores the forecast against what it measured."""
    folder, summaries = store
    reports = folder / "reports" / "scaled"
    forecast = pd.read_csv(reports / "forecast.csv").iloc[0]
    assert forecast["variant"] == "rmsnorm" and forecast["target"] == "d_model=96"
    assert forecast["low"] < forecast["difference"] < forecast["high"] and 0 <= forecast["p_better"] <= 1
    assert forecast["multiplier_low"] <= forecast["multiplier"] <= forecast["multiplier_high"]
    report = (reports / "report.md").read_text()
    assert "### Forecast at d_model=96" in report and "Kaplan et al. 2020" in report
    assert f"{forecast['difference']:+.4f} [{forecast['low']:+.4f}, {forecast['high']:+.4f}]" in report
    summary = summaries["scaled"]
    compared = summary[summary["arm"] != summary["baseline"]]
    assert compared["settled_step"].between(4, 12).all() and (compared["steps"] == 12).all()
    assert report.count("settled at step") == len(compared)

    checked = subprocess.run([*warm.command(), "bench", "forecast", "scaled", "--tracking-uri",
                              f"sqlite:///{folder}/mlflow.db", "--reports-dir", str(folder / "reports")],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    cases = pd.read_csv(reports / "forecast_cases.csv")
    assert list(zip(cases["variant"], cases["reference"], cases["held_out"])) == [("rmsnorm", "layernorm",
                                                                                    "d_model=48")]
    values = summary[summary["arm"].str.endswith("@d_model=48")].set_index("variant")["mean"]
    assert cases["measured"].iloc[0] == pytest.approx(values["rmsnorm"] - values["layernorm"], rel=1e-9)
    assert "coverage of the 95% intervals" in checked.stdout and "Brier score" in checked.stdout
    assert "Too few cases (1) to say whether the forecasts beat the naive rules" in checked.stdout
    assert (reports / "forecast_check.md").read_text().strip() == checked.stdout.strip()

    too_few = subprocess.run([*warm.command(), "bench", "forecast", "plain", "--tracking-uri",
                              f"sqlite:///{folder}/mlflow.db", "--reports-dir", str(folder / "reports")],
                             capture_output=True, text=True, timeout=300)
    assert too_few.returncode == 2 and "has 0 scales" in too_few.stderr and "Traceback" not in too_few.stderr


def test_how_a_difference_moves_with_scale():
    def group(*rows):
        return pd.DataFrame([{"scale": s, "diff": d, "diff_ci_low": d - h, "diff_ci_high": d + h, "outcome": o}
                             for s, d, h, o in rows])

    assert trend(group(("a", -0.05, 0.01, "better"), ("b", 0.04, 0.01, "worse"))).startswith(
        "flips: better at a, worse at b")
    assert trend(group(("a", -0.01, 0.002, "better"), ("b", -0.05, 0.002, "better"))) == \
        "grows (-0.0100 at a to -0.0500 at b)"
    assert trend(group(("a", 0.05, 0.04, ""), ("b", 0.02, 0.04, ""))).endswith(
        "within noise: the 95% intervals at both ends overlap")
    assert trend(group(("a", 0.01, 0.1, ""), ("b", -0.01, 0.1, ""))).startswith("changes sign")
    assert trend(group(("a", math.nan, math.nan, ""), ("b", 0.01, 0.1, ""))).startswith("unknown")
    one_seed = group(("a", 0.01, math.nan, ""), ("b", 0.03, math.nan, ""))
    assert trend(one_seed).endswith("no 95% interval at both ends to tell it from noise")


@pytest.mark.parametrize("scales, extra, message", [
    ({"base.model.d_model": [16]}, {}, "at least 2"),
    ({"base.model.d_model": [16, 32], "base.model.n_head": [2]}, {}, "same number of values"),
    ({"model.d_model": [16, 32]}, {}, "must start with base.model."),
    ({"base.model.norm": ["layernorm", "rmsnorm"]}, {}, "also set by arm"),
    ({"base.train.steps": [10, 20]}, {"seeds": {"min": 2, "max": 4}}, "cannot be combined"),
    ({"base.model.d_model": [16, 32]}, {"arms": [{"name": "a", "set": {"model": {"d_model": 64}}}]}, "also set by arm"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"at": {"base.model.n_layer": 12}}}},
     "needs the paths of scales"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"at": {"base.model.d_model": 96},
                                                                    "compute": 1e15}}}, "not both"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"axis": "params", "compute": 1e15}}},
     "needs axis: compute"),
    ({}, {"report": {"forecast": {"at": {"base.model.d_model": 96}}}}, "needs scales"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"at": {}}}}, "needs the paths of scales"),
    ({"base.model.d_model": [16, 32]}, {"report": {"forecast": {"at": {"base.model.d_model": 96}}}},
     "at least 3 scales"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"axis": "tokens"}}}, "none of the scales changes"),
    ({"base.train.steps": [10, 20, 40]}, {"report": {"forecast": {"axis": "params"}}}, "none of the scales changes"),
    ({"base.model.d_model": [16, 32, 48]}, {"report": {"forecast": {"compute": float("inf")}}}, "finite"),
])
def test_scales_that_cannot_work_are_refused(scales, extra, message):
    arms = {} if "arms" in extra else {"grid": {"model.norm": ["layernorm", "rmsnorm"]}}
    with pytest.raises((ValueError, AblateError), match=message):
        StudySpec(name="s", scales=scales, **arms, **extra)


def test_an_arm_that_sets_other_model_fields_nested_is_scaled():
    study = StudySpec(name="s", scales={"base.model.d_model": [16, 32]},
                      arms=[{"name": "a", "set": {"model": {"norm": "layernorm"}}},
                            {"name": "b", "set": {"model": {"norm": "rmsnorm"}}}])
    assert [label for label, _ in study.scale_list()] == ["d_model=16", "d_model=32"]


def test_the_leaderboard_ranks_every_study_in_the_store(store):
    folder, summaries = store
    board_dir = folder / "board"
    made = subprocess.run([*warm.command(), "leaderboard", "--tracking-uri",
                           f"sqlite:///{folder}/mlflow.db", "--reports-dir", str(board_dir)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    board = pd.read_csv(board_dir / "leaderboard.csv", keep_default_na=False)
    assert sorted(zip(board["study"], board["variant"], board["scale"])) == [
        ("plain", "rmsnorm", ""), *(("scaled", "rmsnorm", f"d_model={w}") for w in (16, 24, 32, 48))]
    for row in board.itertuples():
        summary = summaries[row.study]
        expected = summary[(summary["arm"] != summary["baseline"]) & (summary.get("scale", "") == row.scale)].iloc[0]
        assert row.baseline == "layernorm"
        assert float(row.delta) == pytest.approx(expected["diff"], rel=1e-9)
        assert float(row.ci_low) == pytest.approx(expected["diff_ci_low"], rel=1e-9)
        assert float(row.p_holm) == pytest.approx(expected["p_adjusted"], rel=1e-9)
        assert row.seeds == "3/3" and row.tuned == "no"
    assert set(board["tokens per run"]) == {12 * 4 * 32}
    improvement = -board["delta"].astype(float)
    assert list(improvement) == sorted(improvement, reverse=True), "best improvement first"
    markdown = (board_dir / "leaderboard.md").read_text()
    assert "2 studies, 5 variants" in markdown and "**Scale.**" in markdown and "1.54k tokens per run" in markdown
    assert (board_dir / "leaderboard.png").stat().st_size > 10_000
    # pydoc's 420k training tokens are seen a fraction of once; a study that repeats its data says so
    assert (board["data epochs"].astype(float) < 1).all() and "repeats its data" not in markdown
    from harness.report.leaderboard import render_leaderboard

    repeated = board.assign(**{"data epochs": [350.0] + [0.01] * (len(board) - 1)})
    assert render_leaderboard(repeated, []).count("repeats its data: 350 epochs") == 1
