"""Each arm of a report as an MLflow run of its own, beside its seeds' runs: the across-seed
mean of the metric and its 95% band at every evaluated step, and the arm's verdict.

Select the arm runs of a study in MLflow's chart view and plot `val_loss_mean`,
`val_loss_ci_low` and `val_loss_ci_high`: the arms appear as curves with confidence bands,
which MLflow does not draw from the seeds' runs themselves. The arm runs are children of the
execution's parent run, tagged `ablate.kind = arm`, and are made again whenever the report is
rebuilt (the previous ones are deleted), so they always show what the report says.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.stats import t_interval
from harness.tracking.tracker import ARM_KIND, DerivedRun, Tracker

# summary column -> the arm run's metric (prefixed with the study's metric)
FINAL = {"mean": "final_mean", "std": "final_std", "ci_low": "final_ci_low", "ci_high": "final_ci_high",
         "diff": "delta", "diff_ci_low": "delta_ci_low", "diff_ci_high": "delta_ci_high", "p": "p",
         "p_adjusted": "p_adjusted"}


def band(curves: pd.DataFrame) -> pd.DataFrame:
    """Per arm and step at which every one of the arm's seeds was evaluated: seeds, mean and
    the 95% t interval of the mean. `curves` holds arm, seed, step and value."""
    rows = []
    for (arm, step), points in curves.groupby(["arm", "step"], sort=False):
        if len(points) < curves.loc[curves["arm"] == arm, "seed"].nunique():
            continue  # a seed not evaluated here (yet): a mean over fewer seeds would jump
        values = points["value"].to_numpy(float)
        low, high = t_interval(values)
        rows.append({"arm": arm, "step": int(step), "seeds": len(values), "mean": float(values.mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["arm", "step", "seeds", "mean", "ci_low", "ci_high"])


def log_arm_runs(tracker: Tracker, experiment_id: str, parent_run_id: str, summary: pd.DataFrame,
                 curves: pd.DataFrame, metric: str) -> dict[str, str]:
    """Replace the execution's arm runs with ones made from `summary` and the finished seeds'
    `curves`; returns the new run id of each arm."""
    bands = band(curves)
    last = int(bands["step"].max()) if len(bands) else 0
    runs = []
    for row in summary.to_dict("records"):
        arm = row["arm"]
        tags = {"arm": arm, "verdict": row["verdict"], "baseline": row["baseline"], "flag": row["flag"],
                "seeds": f"{row['seeds']}/{row['planned']}", "test": row["test"] or "",
                "mlflow.note.content": f"{arm}: mean of {row['seeds']} seeds, 95% band; {row['verdict']}"}
        points = []
        for point in bands[bands["arm"] == arm].itertuples():
            points += [(f"{metric}_mean", point.mean, point.step)]
            if point.seeds > 1:
                points += [(f"{metric}_ci_low", point.ci_low, point.step), (f"{metric}_ci_high", point.ci_high, point.step)]
        points += [(f"{metric}_{name}", float(row[column]), last) for column, name in FINAL.items()
                   if not math.isnan(float(row[column]))]
        points += [("seeds", float(row["seeds"]), last)]
        runs.append(DerivedRun(f"{arm} (mean of {row['seeds']} seeds)", tags, points))
    made = tracker.replace_derived_runs(experiment_id, parent_run_id, ARM_KIND, runs)
    return dict(zip(summary["arm"], made))
