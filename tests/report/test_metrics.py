"""Secondary metrics and which metric can decide: the smallest detectable difference has the
power it claims (by simulation), the signal-to-noise ratio is the arms' spread over the pooled
seed std, a noisy metric is called too noisy, and a real study's report shows every metric."""

import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.config.records import PlanRecord
from harness.config.study import goal_of
from harness.report.metrics import detectable_difference, quality_metrics, secondary_summaries, signal_and_noise
from harness.report.scales import summarize_plan
from tests import warm


@pytest.mark.parametrize("seeds, alpha", [(3, 0.05), (5, 0.05 / 3), (20, 0.05)])
def test_the_detectable_difference_is_found_with_80_percent_power(seeds, alpha):
    effect = detectable_difference(0.1, seeds, alpha)
    rng = np.random.default_rng(0)
    differences = rng.normal(effect, 0.1, size=(40_000, seeds))
    p = stats.ttest_1samp(differences, 0.0, axis=1).pvalue
    assert (p < alpha).mean() == pytest.approx(0.8, abs=0.01)
    # more seeds detect less; no noise detects anything; one seed measures no noise
    assert detectable_difference(0.1, seeds + 5, alpha) < effect
    assert detectable_difference(0.0, seeds) == 0.0 and math.isnan(detectable_difference(0.1, 1))


def test_large_samples_approach_the_normal_formula():
    assert detectable_difference(1.0, 2000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(2000), rel=2e-3)


def test_goals_follow_the_metric_s_name():
    assert [goal_of(m) for m in ("val_loss", "val_bpb", "wikitext/word_perplexity", "hellaswag/acc_norm",
                                 "val_exact_match")] == ["minimize", "minimize", "minimize", "maximize", "maximize"]


def _plan(arms):
    return PlanRecord(study="s", baseline=arms[0], metric="val_loss", goal="minimize",
                      arms=[{"name": a, "config": {}} for a in arms],
                      runs=[{"arm": a, "seed": s, "run_key": f"{a}{s}"} for a in arms for s in range(4)])


def _results(columns: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    arms = list(next(iter(columns.values())))
    rows = [{"arm": arm, "seed": seed, "state": "finished", "params": 10, "params_non_embedding": 8,
             "flops_per_token": 100, "tokens_per_s": 1000.0, "wall_time_s": 5.0, "lr": 0.001,
             **{metric: values[arm][seed] for metric, values in columns.items()}}
            for arm in arms for seed in range(4)]
    return pd.DataFrame(rows)


def test_signal_to_noise_and_the_verdict_on_what_can_decide():
    clear = {"a": [2.00, 2.10, 1.90, 2.05], "b": [1.80, 1.91, 1.69, 1.86]}  # b lower by 0.1975 on every seed ± 0.01
    noisy = {"a": [0.30, 0.50, 0.20, 0.45], "b": [0.46, 0.21, 0.44, 0.30]}  # seed noise far above the spread
    results = _results({"val_loss": clear, "hellaswag/acc_norm": noisy, "hellaswag/acc_norm_stderr": noisy})
    plan = _plan(["a", "b"])
    assert quality_metrics(results) == ["val_loss", "hellaswag/acc_norm"], "no stderr, no learning rate"
    secondary = secondary_summaries(results, plan)
    assert list(secondary) == ["hellaswag/acc_norm"]
    table = signal_and_noise(results, {"val_loss": summarize_plan(results, plan, {}), **secondary}, plan)
    verdict, other = table.iloc[0], table.iloc[1]
    assert (verdict["role"], other["role"]) == ("verdict", "secondary")
    spread = abs(np.mean(clear["a"]) - np.mean(clear["b"]))
    pooled = math.sqrt((np.var(clear["a"], ddof=1) + np.var(clear["b"], ddof=1)) / 2)
    assert verdict["spread"] == pytest.approx(spread) and verdict["snr"] == pytest.approx(spread / pooled)
    paired = np.std(np.subtract(clear["b"], clear["a"]), ddof=1)
    assert verdict["detectable_difference"] == pytest.approx(detectable_difference(paired, 4))
    assert verdict["can_decide"] == "separates these arms"
    assert other["can_decide"].startswith("too noisy to separate these arms at this scale")
    assert other["spread"] < other["detectable_difference"]


STUDY = """
name: secondary
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 20, batch_size: 4, eval_interval: 10}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 2
"""


def test_a_study_report_shows_every_metric_its_signal_to_noise_and_the_verdict_on_its_own(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    ran = subprocess.run([*warm.command(), "run", "study.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr
    folder = tmp_path / "reports" / "secondary"
    report = (folder / "report.md").read_text()
    verdicts = report.split("## Verdicts")[1].split("##")[0]
    assert "**post vs pre**" in verdicts and "val_bpb" not in verdicts
    assert "## Which metric can decide" in report and "## Secondary metrics" in report
    assert "### `val_bpb` (lower is better)" in report and "### `train_loss` (lower is better)" in report
    snr = pd.read_csv(folder / "signal_noise.csv")
    assert list(snr["metric"]) == ["val_loss", "train_loss", "val_bpb"]
    assert list(snr["role"]) == ["verdict", "secondary", "secondary"]
    secondary = pd.read_csv(folder / "secondary.csv")
    assert set(secondary["metric"]) == {"train_loss", "val_bpb"} and len(secondary) == 4
