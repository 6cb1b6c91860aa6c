"""Few-seed statistics: mean ± std, 95% t interval, Welch's test against the baseline, Holm.

Each arm has a handful of seeds, so intervals use Student's t, differences use Welch's test
(no equal-variance assumption), and the p-values of several arms facing one baseline are
Holm-adjusted so that "better" keeps its 5% family-wise meaning.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05


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


def summarize(results: pd.DataFrame, metric: str, baseline: str, goal: str, arm_order: list[str]) -> pd.DataFrame:
    """One row per arm from one row per run (`arm`, `state`, the metric, and resource columns)."""
    rows = []
    done = results[results["state"] == "finished"]
    base_values = done.loc[done["arm"] == baseline, metric].to_numpy(float)
    for arm in arm_order:
        runs = results[results["arm"] == arm]
        values = done.loc[done["arm"] == arm, metric].to_numpy(float)
        row = {"arm": arm, "seeds": len(values), "diverged": int((runs["state"] == "diverged").sum()),
               "failed": int((runs["state"] == "failed").sum()),
               "mean": _mean(values), "std": _std(values)}
        row["ci_low"], row["ci_high"] = _t_interval(values)
        row.update(_versus_baseline(values, base_values) if arm != baseline else _empty_comparison())
        for column in ("params_non_embedding", "params", "flops_per_token"):
            row[column] = runs[column].iloc[0] if len(runs) else math.nan
        for column in ("tokens_per_s", "wall_time_s"):
            row[column] = done.loc[done["arm"] == arm, column].mean()
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["p_holm"] = holm(summary["p_welch"].tolist())
    summary["verdict"] = [_verdict(r, baseline, goal) for r in summary.to_dict("records")]
    return summary


def _mean(values):
    return float(np.mean(values)) if len(values) else math.nan


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _t_interval(values):
    if len(values) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return float(np.mean(values) - half), float(np.mean(values) + half)


def _empty_comparison():
    return {"diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p_welch": math.nan}


def _versus_baseline(values, base_values):
    if len(values) < 2 or len(base_values) < 2:
        comparison = _empty_comparison()
        if len(values) and len(base_values):
            comparison["diff"] = float(np.mean(values) - np.mean(base_values))
        return comparison
    test = stats.ttest_ind(values, base_values, equal_var=False)
    interval = test.confidence_interval(1 - ALPHA)
    return {"diff": float(np.mean(values) - np.mean(base_values)), "diff_ci_low": float(interval.low),
            "diff_ci_high": float(interval.high), "p_welch": float(test.pvalue)}


def _verdict(row: dict, baseline: str, goal: str) -> str:
    if row["arm"] == baseline:
        return "baseline"
    if row["seeds"] == 0:
        return "no finished run"
    if math.isnan(row["p_welch"]):
        return "too few seeds for a test"
    half = (row["diff_ci_high"] - row["diff_ci_low"]) / 2
    text = f"{row['diff']:+.4f} ± {half:.4f}, p = {_format_p(row['p_holm'])}"
    if row["p_holm"] >= ALPHA:
        return f"{text}, no significant difference"
    improved = row["diff"] < 0 if goal == "minimize" else row["diff"] > 0
    return f"{text}, {'better' if improved else 'worse'}"


def _format_p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"
