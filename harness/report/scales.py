"""Does the verdict survive scale? A study with `scales:` runs every arm at every scale; each
scale is a comparison of its own (its baseline, Holm over its arms), and the differences are
then read across scales: growing, shrinking or flipping as training compute grows."""

from __future__ import annotations

import math

import pandas as pd

from harness.config.records import PlanRecord
from harness.report.sequential import SequentialRule
from harness.report.stats import summarize


def summarize_plan(results: pd.DataFrame, plan: PlanRecord, references: dict[str, float],
                   rule: SequentialRule | None = None) -> pd.DataFrame:
    """One row per arm of the plan (see harness.report.stats.summarize); with scales, one
    comparison per scale, each row naming its `variant` and `scale`."""
    metric, goal = plan.metric, plan.goal
    if not plan.scales:
        return summarize(results, metric, plan.baseline, goal, [arm.name for arm in plan.arms],
                         references, rule)
    parts = []
    for scale in plan.scales:
        arms = [arm for arm in plan.arms if arm.scale == scale.label]
        names = [arm.name for arm in arms]
        part = summarize(results[results["arm"].isin(names)], metric, arms[0].baseline, goal, names, references)
        part.insert(1, "variant", [arm.variant for arm in arms])
        part.insert(2, "scale", scale.label)
        part["training_flops"] = [training_flops(arm.config, flops) for arm, flops in zip(arms, part["flops_per_token"])]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def training_flops(config: dict, flops_per_token: float) -> float:
    """Training FLOPs of one run: FLOPs per token times the tokens it trains on."""
    train = config["train"]
    tokens = train["steps"] * train["batch_size"] * train.get("grad_accum", 1) * config["model"]["context_length"]
    return flops_per_token * tokens


def across_scales(summary: pd.DataFrame) -> pd.DataFrame:
    """Per variant (not the baseline): its difference at each scale and how it moves with scale."""
    rows = []
    for variant, group in summary[summary["arm"] != summary["baseline"]].groupby("variant", sort=False):
        row = {"variant": variant}
        for r in group.itertuples():
            row[r.scale] = "–" if math.isnan(r.diff) else (
                f"{r.diff:+.4f} [{r.diff_ci_low:+.4f}, {r.diff_ci_high:+.4f}]{' ' + r.outcome if r.outcome else ''}")
        row["with scale"] = trend(group)
        rows.append(row)
    return pd.DataFrame(rows)


def trend(group: pd.DataFrame) -> str:
    """How one variant's difference moves from the smallest to the largest scale."""
    known = group.dropna(subset=["diff"])
    if len(known) < 2:
        return "unknown: fewer than two scales have a difference"
    better, worse = known[known["outcome"] == "better"], known[known["outcome"] == "worse"]
    if len(better) and len(worse):
        return (f"flips: better at {', '.join(better['scale'])}, worse at {', '.join(worse['scale'])}")
    first, last = known.iloc[0], known.iloc[-1]
    if math.copysign(1, first["diff"]) != math.copysign(1, last["diff"]):
        movement = f"changes sign ({first['diff']:+.4f} at {first['scale']}, {last['diff']:+.4f} at {last['scale']})"
    elif abs(last["diff"]) > abs(first["diff"]):
        movement = f"grows ({first['diff']:+.4f} at {first['scale']} to {last['diff']:+.4f} at {last['scale']})"
    else:
        movement = f"shrinks ({first['diff']:+.4f} at {first['scale']} to {last['diff']:+.4f} at {last['scale']})"
    ends = [first["diff_ci_low"], first["diff_ci_high"], last["diff_ci_low"], last["diff_ci_high"]]
    if any(math.isnan(end) for end in ends):  # one seed: no interval to hold the ends apart
        return movement + "; no 95% interval at both ends to tell it from noise"
    overlap = not (first["diff_ci_high"] < last["diff_ci_low"] or last["diff_ci_high"] < first["diff_ci_low"])
    return movement + ("; within noise: the 95% intervals at both ends overlap" if overlap else "")
