"""Few-seed statistics in which every planned seed counts.

- Each arm: mean ± std of its finished seeds, and a 95% Student t interval.
- Against the baseline, paired by seed: a seed fixes the data order and the initialisation
  the same way in every arm, so when the baseline finished every seed the arm finished the
  difference is tested with the paired t-test over those seeds (and its interval);
  otherwise (an A/A control with seeds of its own) with Welch's t-test. With several arms
  facing one baseline, p-values are Holm-adjusted (or, when seeds were added sequentially,
  adjusted by harness.report.sequential) so that "better" and "worse" keep their 5%
  family-wise meaning.
- Every seed counts: an arm with a diverged seed is "unstable", whatever its other seeds
  say; an arm (or baseline) whose seeds have not all finished is "incomplete". Neither is
  called better or worse.
- Differences that do not vary between seeds (constant arms) are not tested: the p-value
  of a zero-variance difference is rounding noise. They are reported as they are.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.config.run_state import RunState
from harness.report.sequential import SequentialRule

ALPHA = 0.05
# relative spread below which values are the same number up to float32 rounding
CONSTANT = 1e-7

RULES = ("Differences are arm minus baseline. When the baseline finished every seed the arm finished, they are "
         "paired by seed (a seed fixes data order and initialisation in every arm): the paired t-test and its 95% "
         "interval; otherwise Welch's t-test and interval. \"better\"/\"worse\" needs an adjusted p < 0.05. "
         "Every planned seed counts: an arm with "
         "a diverged seed is \"unstable\" and one whose seeds have not all finished is \"incomplete\"; neither is "
         "judged on the seeds that survived. Differences that are the same on every seed are reported without a "
         "test. An arm whose mean final loss is not below the unigram reference (predicting every token by its "
         "frequency), or whose 95% interval reaches it (with one seed: less than 5% of the way to the bigram "
         "reference), \"has not learned\"; one not below the bigram reference is \"undertrained\". Both say how "
         "far the arm got from the unigram reference toward the bigram one.")


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979); NaN entries are left out and kept NaN."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def summarize(results: pd.DataFrame, metric: str, baseline: str, goal: str, arm_order: list[str],
              references: dict[str, float] | None = None, rule: SequentialRule | None = None) -> pd.DataFrame:
    """One row per arm from one row per planned run (`arm`, `seed`, `state`, the metric, and
    resource columns); a planned run not trained yet has a state other than finished.
    `references` (unigram_loss, bigram_loss) flag arms that learned less than they do;
    `rule` adjusts p-values of a study that added seeds sequentially (else Holm's)."""
    finished = results[results["state"] == RunState.FINISHED.value]
    base = _values(finished, baseline, metric)
    base_planned = set(results.loc[results["arm"] == baseline, "seed"])
    rows = []
    for arm in arm_order:
        runs = results[results["arm"] == arm]
        values = _values(finished, arm, metric)
        row = {"arm": arm, "planned": len(runs), "seeds": len(values),
               "diverged": int((runs["state"] == RunState.DIVERGED.value).sum()), "failed": int((runs["state"] == RunState.FAILED.value).sum()),
               "mean": _mean(values), "std": _std(values)}
        row["unfinished"] = row["planned"] - row["seeds"] - row["diverged"] - row["failed"]
        row["ci_low"], row["ci_high"] = t_interval(values.to_numpy(float))
        if arm != baseline:
            row.update(_compare(values, base))
            # what the comparison needs of the baseline: the arm's seeds when the baseline planned
            # them all (paired by seed), else every seed of its own (Welch: the arm has seeds the
            # baseline never trains, so pairing would drop them)
            needed = set(runs["seed"]) if set(runs["seed"]) <= base_planned else base_planned
            row["baseline_ready"] = needed <= set(base.index)
        else:
            row.update(_no_comparison())
        for column in ("params_non_embedding", "params", "flops_per_token"):
            row[column] = runs[column].dropna().iloc[0] if runs[column].notna().any() else math.nan
        # the arm's speed from its runs that ran undisturbed (slowed or resumed runs are marked in the runs table)
        undisturbed = finished[(finished["arm"] == arm) & (finished.get("speed_caveat", "") == "")]
        for column in ("tokens_per_s", "wall_time_s"):
            row[column] = undisturbed[column].mean()
        rows.append(row)
    summary = pd.DataFrame(rows)
    arms = len(arm_order) - 1
    summary["p_adjusted"] = holm(summary["p"].tolist()) if rule is None else [
        math.nan if math.isnan(p) else rule.adjusted(p, seeds, arms) for p, seeds in zip(summary["p"], summary["seeds"])]
    base_row = summary[summary["arm"] == baseline].iloc[0].to_dict()
    summary["verdict"] = [_verdict(r, base_row, goal, rule) for r in summary.to_dict("records")]
    summary["settled"] = [_settled(r, base_row, rule) for r in summary.to_dict("records")]
    summary["flag"] = [_flag(mean, high, references or {}) for mean, high in zip(summary["mean"], summary["ci_high"])]
    summary["outcome"] = [v.rsplit(", ", 1)[-1] if v.endswith(("better", "worse")) else "" for v in summary["verdict"]]
    summary["baseline"] = baseline
    return summary


# with one seed there is no interval: an arm this close to the unigram reference (as a share of
# the way from unigram to bigram) is taken to be within noise of it
ONE_SEED_NOISE = 0.05


def _flag(mean: float, ci_high: float, references: dict[str, float]) -> str:
    """Whether an arm's final loss shows it learned more than counting tokens does, and how far
    it got from the unigram reference (every token by its frequency) toward the bigram one."""
    if math.isnan(mean) or "unigram_loss" not in references:
        return ""
    unigram, bigram = references["unigram_loss"], references.get("bigram_loss", math.nan)
    gap = unigram - bigram
    if math.isnan(bigram) or gap <= 0:
        return f"has not learned: not below the unigram reference ({unigram:.4f})" if mean >= unigram else ""
    way = (unigram - mean) / gap
    where = f"{way:.1%} of the way from the unigram reference ({unigram:.4f}) to the bigram ({bigram:.4f})"
    within_noise = ci_high >= unigram if not math.isnan(ci_high) else way < ONE_SEED_NOISE
    if mean >= unigram:
        return f"has not learned: not below the unigram reference ({unigram:.4f})"
    if within_noise:
        return f"has not learned: {where}"
    if mean >= bigram:
        return f"undertrained: {where}"
    return ""


def _values(finished: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    """The arm's final metric by seed."""
    runs = finished[finished["arm"] == arm]
    return pd.Series(runs[metric].to_numpy(float), index=runs["seed"].to_numpy()).sort_index()


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% Student t interval of the mean; NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return float(np.mean(values) - half), float(np.mean(values) + half)


def _constant(differences: np.ndarray, scale: np.ndarray) -> bool:
    return float(np.ptp(differences)) <= CONSTANT * max(1.0, float(np.max(np.abs(scale))))


def _no_comparison() -> dict:
    return {"test": "", "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p": math.nan,
            "baseline_ready": True}


def _compare(values: pd.Series, base: pd.Series) -> dict:
    comparison = _no_comparison()
    if not len(values) or not len(base):
        return comparison
    comparison["diff"] = float(values.mean() - base.mean())
    scale = np.concatenate([values.to_numpy(), base.to_numpy()])
    if set(values.index) <= set(base.index) and len(values) >= 2:
        differences = (values - base.loc[values.index]).to_numpy(float)
        comparison["diff"] = float(differences.mean())  # over the seeds both arms trained
        if _constant(differences, scale):
            return _constant_difference(comparison)
        test = stats.ttest_rel(values.to_numpy(float), base.loc[values.index].to_numpy(float))
        kind = "paired t"
    elif len(values) >= 2 and len(base) >= 2:
        if _constant(values.to_numpy(float), scale) and _constant(base.to_numpy(float), scale):
            return _constant_difference(comparison)
        test = stats.ttest_ind(values.to_numpy(float), base.to_numpy(float), equal_var=False)
        kind = "Welch t"
    else:
        return comparison
    interval = test.confidence_interval(1 - ALPHA)
    comparison.update(test=kind, diff_ci_low=float(interval.low), diff_ci_high=float(interval.high),
                      p=float(test.pvalue))
    return comparison


def _constant_difference(comparison: dict) -> dict:
    diff = comparison["diff"]
    return {**comparison, "test": "constant", "diff_ci_low": diff, "diff_ci_high": diff}


def _settled(row: dict, base: dict, rule: SequentialRule | None) -> bool:
    """Whether more seeds could change the verdict (only a sequential study adds them)."""
    if rule is None or row["arm"] == base["arm"] or row["diverged"] or base["diverged"] or row["test"] == "constant":
        return True
    significant = not math.isnan(row["p_adjusted"]) and row["p_adjusted"] < ALPHA
    return significant or row["seeds"] >= rule.max_seeds


def _verdict(row: dict, base: dict, goal: str, rule: SequentialRule | None = None) -> str:
    if row["arm"] == base["arm"]:
        return "baseline" + (f" (unstable: {base['diverged']} of {base['planned']} seeds diverged)"
                             if base["diverged"] else "")
    if row["diverged"]:
        return f"unstable: {row['diverged']} of {row['planned']} seeds diverged{_survivors(row)}"
    if base["diverged"]:
        return f"no verdict: the baseline diverged on {base['diverged']} of {base['planned']} seeds"
    if row["seeds"] < row["planned"]:
        return f"incomplete: {row['seeds']} of {row['planned']} seeds finished{_survivors(row)}"
    if not row["baseline_ready"]:
        return f"incomplete: the baseline has not finished the seeds this comparison needs{_survivors(row)}"
    if row["test"] == "constant":
        if row["diff"] == 0 or abs(row["diff"]) <= CONSTANT * max(1.0, abs(row["mean"])):
            return "no difference: the same value on every seed"
        return f"{row['diff']:+.4f} on every seed, {_direction(row, goal)}"
    if math.isnan(row["p"]):
        return "too few seeds for a test"
    half = (row["diff_ci_high"] - row["diff_ci_low"]) / 2
    text = f"{row['diff']:+.4f} ± {half:.4f}, p = {_format_p(row['p_adjusted'])}"
    if row["p_adjusted"] >= ALPHA:
        if rule is not None and row["seeds"] < rule.max_seeds:
            return f"{text}, not settled yet ({row['seeds']} of up to {rule.max_seeds} seeds)"
        return f"{text}, no significant difference"
    return f"{text}, {_direction(row, goal)}"


def _direction(row: dict, goal: str) -> str:
    improved = row["diff"] < 0 if goal == "minimize" else row["diff"] > 0
    return "better" if improved else "worse"


def _survivors(row: dict) -> str:
    if math.isnan(row["diff"]):
        return ""
    return f" (the finished seeds alone: {row['diff']:+.4f})"


def _format_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"
