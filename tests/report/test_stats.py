"""Statistics of the report."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report.stats import holm, summarize


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def _results(values: dict[str, list[float]], diverged: dict[str, int] | None = None):
    rows = []
    for arm, losses in values.items():
        rows += [{"arm": arm, "seed": i, "state": "finished", "val_loss": v, "params": 10, "params_non_embedding": 8,
                  "flops_per_token": 100, "tokens_per_s": 1000.0, "wall_time_s": 5.0} for i, v in enumerate(losses)]
        rows += [{"arm": arm, "seed": 100 + i, "state": "diverged", "val_loss": float("nan"), "params": 10,
                  "params_non_embedding": 8, "flops_per_token": 100, "tokens_per_s": 1000.0, "wall_time_s": 1.0}
                 for i in range((diverged or {}).get(arm, 0))]
    return pd.DataFrame(rows)


def test_summary_has_t_intervals_welch_tests_and_verdicts():
    base, better, same = [2.0, 2.1, 1.9, 2.05], [1.5, 1.55, 1.45, 1.5], [2.0, 2.2, 1.8, 2.1]
    summary = summarize(_results({"a": base, "b": better, "c": same}, {"c": 1}), "val_loss", "a", "minimize",
                        ["a", "b", "c"]).set_index("arm")
    low, high = stats.t.interval(0.95, 3, loc=np.mean(base), scale=stats.sem(base))
    assert summary.loc["a", "ci_low"] == pytest.approx(low) and summary.loc["a", "ci_high"] == pytest.approx(high)
    assert summary.loc["b", "p_welch"] == pytest.approx(stats.ttest_ind(better, base, equal_var=False).pvalue)
    assert summary.loc["b", "p_holm"] == pytest.approx(min(1, 2 * summary.loc["b", "p_welch"]))
    assert summary.loc["b", "verdict"].endswith("better") and summary.loc["b", "verdict"].startswith("-0.5125 ±")
    assert summary.loc["c", "verdict"].endswith("no significant difference")
    assert summary.loc["c", "diverged"] == 1 and summary.loc["c", "seeds"] == 4
    assert summary.loc["a", "verdict"] == "baseline"


def test_higher_is_better_flips_the_verdict():
    summary = summarize(_results({"a": [0.5, 0.52, 0.51], "b": [0.9, 0.91, 0.92]}), "val_loss", "a", "maximize",
                        ["a", "b"]).set_index("arm")
    assert summary.loc["b", "verdict"].endswith("better")


def test_one_seed_is_too_few_for_a_test():
    summary = summarize(_results({"a": [1.0], "b": [0.5]}), "val_loss", "a", "minimize", ["a", "b"]).set_index("arm")
    assert summary.loc["b", "verdict"] == "too few seeds for a test" and summary.loc["b", "diff"] == -0.5
