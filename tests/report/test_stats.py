"""Statistics of the report: every seed counts, pairing by seed, no p-value made of rounding noise."""

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


def _results(values: dict[str, list[float]], states: dict[str, list[str]] | None = None, seeds=None):
    """One row per planned run; `states` overrides some runs' state (their value is dropped)."""
    rows = []
    for arm, losses in values.items():
        for i, value in enumerate(losses):
            state = (states or {}).get(arm, ["finished"] * len(losses))[i]
            rows.append({"arm": arm, "seed": (seeds or {}).get(arm, range(len(losses)))[i], "state": state,
                         "val_loss": value if state == "finished" else math.nan, "params": 10,
                         "params_non_embedding": 8, "flops_per_token": 100, "tokens_per_s": 1000.0,
                         "wall_time_s": 5.0})
    return pd.DataFrame(rows)


def _summary(values, states=None, goal="minimize", seeds=None, **options):
    return summarize(_results(values, states, seeds), "val_loss", "a", goal, list(values), **options).set_index("arm")


def test_arms_with_the_same_seeds_are_paired_by_seed():
    base, better, same = [2.0, 2.1, 1.9, 2.05], [1.9, 2.02, 1.79, 1.96], [2.0, 2.2, 1.8, 2.1]
    summary = _summary({"a": base, "b": better, "c": same})
    low, high = stats.t.interval(0.95, 3, loc=np.mean(base), scale=stats.sem(base))
    assert summary.loc["a", "ci_low"] == pytest.approx(low) and summary.loc["a", "ci_high"] == pytest.approx(high)
    paired = stats.ttest_rel(better, base)
    assert summary.loc["b", "test"] == "paired t" and summary.loc["b", "p"] == pytest.approx(paired.pvalue)
    assert summary.loc["b", "diff_ci_low"] == pytest.approx(paired.confidence_interval().low)
    assert summary.loc["b", "p_adjusted"] == pytest.approx(holm([paired.pvalue, summary.loc["c", "p"]])[0])
    assert summary.loc["b", "verdict"].endswith("better") and summary.loc["b", "verdict"].startswith("-0.0950 ±")
    assert stats.ttest_ind(better, base, equal_var=False).pvalue > 0.05, "unpaired, the same data says nothing"
    assert summary.loc["c", "verdict"].endswith("no significant difference")
    assert summary.loc["a", "verdict"] == "baseline"


def test_arms_with_seeds_of_their_own_are_compared_with_welch():
    summary = _summary({"a": [2.0, 2.1, 1.9], "b": [1.5, 1.55, 1.45]}, seeds={"b": [100, 101, 102]})
    welch = stats.ttest_ind([1.5, 1.55, 1.45], [2.0, 2.1, 1.9], equal_var=False)
    assert summary.loc["b", "test"] == "Welch t" and summary.loc["b", "p"] == pytest.approx(welch.pvalue)


def test_a_diverged_seed_makes_the_arm_unstable_whatever_its_survivors_say():
    summary = _summary({"a": [2.0, 2.1, 1.9], "b": [1.0, 1.01, 0.0]}, {"b": ["finished", "finished", "diverged"]})
    assert summary.loc["b", "verdict"].startswith("unstable: 1 of 3 seeds diverged")
    assert "better" not in summary.loc["b", "verdict"] and summary.loc["b", "diverged"] == 1


def test_a_diverged_baseline_gives_no_verdict():
    summary = _summary({"a": [2.0, 2.1, 0.0], "b": [1.0, 1.1, 1.2]}, {"a": ["finished", "finished", "diverged"]})
    assert summary.loc["b", "verdict"].startswith("no verdict: the baseline diverged")


def test_a_failed_or_unfinished_seed_leaves_the_comparison_incomplete():
    summary = _summary({"a": [2.0, 2.1, 1.9], "b": [1.0, 1.1, 0.0], "c": [1.0, 1.1, 0.0]},
                       {"b": ["finished", "finished", "failed"], "c": ["finished", "finished", "not run"]})
    assert summary.loc["b", "verdict"].startswith("incomplete: 2 of 3 seeds finished")
    assert summary.loc["c", "verdict"].startswith("incomplete: 2 of 3 seeds finished")


def test_identical_constant_arms_show_no_difference():
    summary = _summary({"a": [2.5, 2.5, 2.5], "b": [2.5, 2.5, 2.5]})
    assert summary.loc["b", "verdict"] == "no difference: the same value on every seed"


def test_constant_arms_that_differ_get_a_verdict_without_a_p_value_of_rounding_noise():
    noise = [0.0, 2e-16, -2e-16]
    summary = _summary({"a": [2.6 + e for e in noise], "b": [2.5 - e for e in noise]})
    assert summary.loc["b", "test"] == "constant" and math.isnan(summary.loc["b", "p"])
    assert summary.loc["b", "verdict"] == "-0.1000 on every seed, better"


def test_higher_is_better_flips_the_verdict():
    summary = _summary({"a": [0.5, 0.52, 0.51], "b": [0.9, 0.91, 0.93]}, goal="maximize")
    assert summary.loc["b", "verdict"].endswith("better")


def test_one_seed_is_too_few_for_a_test():
    summary = _summary({"a": [1.0], "b": [0.5]})
    assert summary.loc["b", "verdict"] == "too few seeds for a test" and summary.loc["b", "diff"] == -0.5


def test_arms_above_the_reference_losses_are_flagged():
    references = {"unigram_loss": 3.2, "bigram_loss": 2.4}
    summary = _summary({"a": [2.0, 2.1, 1.9], "b": [2.5, 2.6, 2.45], "c": [3.3, 3.25, 3.4]}, references=references)
    assert summary.loc["a", "flag"] == ""
    assert summary.loc["b", "flag"].startswith("undertrained: 85.4% of the way from the unigram reference (3.2000)")
    assert summary.loc["c", "flag"].startswith("has not learned: not below the unigram reference")


@pytest.mark.parametrize("values,flag", [
    ([3.2359], "has not learned: 0.2% of the way from the unigram reference (3.2376) to the bigram (2.4000)"),
    ([3.10], "undertrained: 16.4% of the way"),  # one seed, clearly below the unigram reference
    ([3.15, 3.26, 3.20], "has not learned: 4.1% of the way"),  # its interval reaches the unigram reference
    ([3.150, 3.152, 3.151], "undertrained: 10.3% of the way"),  # as close, but the seeds agree
    ([2.0], ""),
])
def test_an_arm_within_noise_of_the_unigram_reference_has_not_learned(values, flag):
    references = {"unigram_loss": 3.2376, "bigram_loss": 2.4}
    summary = _summary({"a": [2.0] * len(values), "b": values}, references=references)
    assert summary.loc["b", "flag"].startswith(flag) if flag else summary.loc["b", "flag"] == ""


SEED_LAYOUTS = {  # the arm's seeds against the baseline's [0, 1, 2, 3], and the test each layout gets
    "same": ([0, 1, 2, 3], "paired t"),
    "subset": ([1, 3], "paired t"),
    "superset": ([0, 1, 2, 3, 4, 5], "Welch t"),
    "overlapping": ([2, 3, 4, 5], "Welch t"),
    "disjoint": ([10, 11, 12], "Welch t"),
}


@pytest.mark.parametrize("layout", SEED_LAYOUTS)
def test_every_seed_layout_ends_in_a_verdict_once_its_runs_finish(layout):
    seeds, test = SEED_LAYOUTS[layout]
    base = [2.0, 2.1, 1.9, 2.05]
    arm = [1.5 + 0.01 * i + 0.03 * (i % 2) for i in range(len(seeds))]
    summary = _summary({"a": base, "b": arm}, seeds={"a": [0, 1, 2, 3], "b": seeds})
    verdict = summary.loc["b", "verdict"]
    assert summary.loc["b", "test"] == test and ", p = " in verdict and not verdict.startswith("incomplete"), verdict


def test_a_superset_arm_waits_for_the_baseline_s_own_seeds_not_for_seeds_it_never_plans():
    """The issue's layout: baseline [0, 1], arm [0, 1, 2, 3]: incomplete while the baseline's
    seed 1 runs, a verdict once it finished."""
    seeds = {"a": [0, 1], "b": [0, 1, 2, 3]}
    running = _summary({"a": [2.0, 2.1], "b": [1.5, 1.52, 1.49, 1.51]}, {"a": ["finished", "running"]}, seeds=seeds)
    assert running.loc["b", "verdict"].startswith("incomplete: the baseline has not finished")
    done = _summary({"a": [2.0, 2.1], "b": [1.5, 1.52, 1.49, 1.51]}, seeds=seeds)
    assert done.loc["b", "test"] == "Welch t" and ", p = " in done.loc["b", "verdict"]
