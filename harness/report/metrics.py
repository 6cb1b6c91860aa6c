"""Every metric the runs log, beside the one the study decides on, and which of them can decide.

The study's `report.metric` gives the verdict. Every other evaluation metric its runs log
(val_loss, val_bpb, exact match, downstream tasks such as `hellaswag/acc_norm`) is summarised
the same way (per arm mean and 95% interval, paired difference against the baseline, p-values
Holm-adjusted within the metric) and labelled secondary.

Which metric can decide, for each one:

- signal-to-noise ratio: the spread of the arms' mean values (largest minus smallest) over
  the seed-to-seed standard deviation (pooled within arms). Heineman et al. 2025, "Signal and
  Noise: A Framework for Reducing Uncertainty in Language Model Evaluation", define it as the
  relative dispersion of models' scores over the relative standard deviation of one model's;
  both are relative to the same mean, which cancels. Their noise is checkpoint-to-checkpoint
  variation; here the seeds are the repeated measurement.
- the smallest difference the study's seeds detect with 80% power: the paired t-test over n
  seeds at the standard deviation of the paired differences, at alpha = 0.05 over the number
  of arms compared (the strictest step of Holm's adjustment), from the noncentral t
  distribution (Cohen 1988, ch. 2).

A metric whose arms spread less than that smallest detectable difference is too noisy to
separate these arms at this scale: more seeds, more validation data or a larger scale would.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from harness.config.records import PlanRecord
from harness.config.study import PER_TOKEN_METRICS, goal_of
from harness.config.run_state import RunState
from harness.report.scales import summarize_plan

POWER = 0.8
ALPHA = 0.05
# logged metrics that describe the machine or the schedule, not the model's quality
NOT_QUALITY = ("lr", "grad_norm", "tokens", "steps_trained", "tokens_per_s", "wall_time_s", "mfu", "step_time_s")


def quality_metrics(results: pd.DataFrame) -> list[str]:
    """The evaluation metrics the finished runs log: val_*, train_loss, and downstream task
    metrics (`task/metric`, without their standard errors)."""
    finished = results[results["state"] == RunState.FINISHED.value]
    names = []
    for column in results.columns:
        evaluative = column.startswith("val_") or column == "train_loss" or (
            "/" in column and not column.endswith("_stderr"))
        if evaluative and column not in NOT_QUALITY and finished[column].notna().any():
            names.append(column)
    return names


def tokenizers_differ(plan: PlanRecord) -> bool:
    """Whether the plan's arms tokenize their text differently (their tokenizers' fingerprints)."""
    return len({arm.config.get("sources", {}).get("tokenizer") for arm in plan.arms}) > 1


def secondary_summaries(results: pd.DataFrame, plan: PlanRecord) -> dict[str, pd.DataFrame]:
    """Per secondary metric (every quality metric but the study's, and no per-token metric where
    arms tokenize differently: their tokens are not the same units), its summary (one row per
    arm, as harness.report.stats.summarize) with the direction its name implies."""
    summaries = {}
    incomparable = PER_TOKEN_METRICS if tokenizers_differ(plan) else ()
    for metric in quality_metrics(results):
        if metric != plan.metric and metric not in incomparable:
            other = plan.model_copy(update={"metric": metric, "goal": goal_of(metric)})
            summaries[metric] = summarize_plan(results, other, {})
    return summaries


def signal_and_noise(results: pd.DataFrame, summaries: dict[str, pd.DataFrame], plan: PlanRecord) -> pd.DataFrame:
    """One row per metric (and scale): the arms' spread, the seed noise, their ratio (SNR), the
    smallest difference the seeds detect at 80% power, and whether the metric can decide."""
    rows = []
    for metric, summary in summaries.items():
        groups = summary.groupby("scale", sort=False) if "scale" in summary else [("", summary)]
        for scale, group in groups:
            rows.append({"metric": metric, **({"scale": scale} if scale else {}),
                         "role": "verdict" if metric == plan.metric else "secondary",
                         **_decisiveness(results, group, metric)})
    return pd.DataFrame(rows)


def _decisiveness(results: pd.DataFrame, summary: pd.DataFrame, metric: str) -> dict:
    finished = results[(results["state"] == RunState.FINISHED.value) & results["arm"].isin(summary["arm"])]
    values = {arm: group.set_index("seed")[metric].dropna() for arm, group in finished.groupby("arm")}
    means = summary["mean"].dropna()
    spread = float(means.max() - means.min()) if len(means) > 1 else math.nan
    noise = _pooled_std(list(values.values()))
    baseline = summary["baseline"].iloc[0]
    differences = [(values[arm] - values[baseline]).dropna() for arm in summary["arm"]
                   if arm != baseline and arm in values and baseline in values]
    paired_noise = _pooled_std(differences)
    if math.isnan(paired_noise):  # unpaired arms: the difference of two means of independent seeds
        paired_noise = noise * math.sqrt(2)
    seeds = int(summary["seeds"].median()) if len(summary) else 0
    compared = max(1, len(summary) - 1)
    # differences the same on every seed are not tested (harness.report.stats): no power either
    detectable = detectable_difference(paired_noise, seeds, ALPHA / compared) if paired_noise > 0 else math.nan
    snr = spread / noise if noise > 0 else math.nan
    significant = (summary["p_adjusted"] < ALPHA).any()
    if significant:
        decides = "separates these arms"
    elif spread == 0:
        decides = "cannot separate these arms: every arm has the same value"
    elif paired_noise == 0:
        decides = "its differences are the same on every seed: see the verdict"
    elif math.isnan(detectable):
        decides = "unknown: too few seeds to measure the noise"
    elif spread < detectable:
        decides = (f"too noisy to separate these arms at this scale: they spread {spread:.4g}, less than the "
                   f"{detectable:.4g} that {seeds} seeds detect")
    else:
        decides = "no arm differs from the baseline significantly"
    return {"spread": spread, "seed_std": noise, "snr": snr, "detectable_difference": detectable, "seeds": seeds,
            "can_decide": decides}


def _pooled_std(samples: list[pd.Series]) -> float:
    """The pooled standard deviation of several samples (each with ddof 1); NaN without any
    sample of two or more values."""
    usable = [np.asarray(sample, dtype=float) for sample in samples if len(sample) > 1]
    if not usable:
        return math.nan
    squares = sum(float(np.var(sample, ddof=1)) * (len(sample) - 1) for sample in usable)
    return math.sqrt(squares / sum(len(sample) - 1 for sample in usable))


def detectable_difference(std: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test over `seeds` paired
    differences of standard deviation `std` detects with probability `power` at level `alpha`
    (the noncentral t distribution with seeds - 1 degrees of freedom). NaN for fewer than two
    seeds or an unknown std; 0 for a std of 0."""
    if seeds < 2 or math.isnan(std):
        return math.nan
    if std == 0:
        return 0.0
    df = seeds - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(shift: float) -> float:  # power at noncentrality `shift`, less the power wanted
        lower = stats.nct.cdf(-critical, df, shift)  # the wrong tail: NaN where it underflows
        return stats.nct.sf(critical, df, shift) + (0.0 if math.isnan(lower) else lower) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    shift = optimize.brentq(shortfall, 0.0, high, xtol=1e-9)
    return float(shift * std / math.sqrt(seeds))
