"""Read a study back from MLflow: one row per run, and the curves."""

from __future__ import annotations

import pandas as pd

from harness.errors import AblateError
from harness.redaction import redact
from harness.run_state import RunState
from harness.tracking.tracker import TUNE_KIND, Tracker

# failed runs are listed beside the finished and diverged ones; interrupted ones are not over yet
REPORTED_STATES = {RunState.FINISHED, RunState.DIVERGED, RunState.FAILED}
NUMERIC_PARAMS = ["params", "params_non_embedding", "flops_per_token", "tokens_per_step", "unigram_loss", "bigram_loss"]


def collect_runs(tracker: Tracker, study: str) -> tuple[pd.DataFrame, dict]:
    """Finished, diverged and failed runs of the study (the newest per run key), and the study's settings."""
    experiment_id = tracker.experiment_id(study, create=False)
    if experiment_id is None:
        raise AblateError(f"no MLflow experiment '{study}' in {redact(tracker.uri)}; run the study first")
    experiment = tracker.client.get_experiment(experiment_id)
    settings = {key.removeprefix("ablate."): value for key, value in experiment.tags.items() if key.startswith("ablate.")}
    rows = []
    for key, run in tracker.runs_by_key(experiment_id).items():
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        if RunState.of(tags) not in REPORTED_STATES:
            continue
        row = {"run_id": run.info.run_id, "arm": tags["arm"], "seed": int(tags["seed"]), "run_key": key,
               "state": tags["state"], "failure_reason": tags.get("failure_reason", ""),
               "device": tags.get("device", ""), "attention_backend": tags.get("attention_backend", "")}
        row.update({name: float(params[name]) if name in params else float("nan") for name in NUMERIC_PARAMS})
        row.update(metrics)
        rows.append(row)
    if not any(row["state"] == "finished" for row in rows):
        raise AblateError(f"MLflow experiment '{study}' has no finished runs yet")
    frame = pd.DataFrame(rows)
    order = settings.get("arms", "").split(",")
    frame["arm_order"] = frame["arm"].map({arm: i for i, arm in enumerate(order)}).fillna(len(order))
    frame = frame.sort_values(["arm_order", "seed"]).drop(columns="arm_order").reset_index(drop=True)
    return frame, settings


def collect_curves(tracker: Tracker, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long table: arm, seed, step, tokens, value, for every run's history of `metric`."""
    rows = []
    for run in runs.itertuples():
        for point in tracker.client.get_metric_history(run.run_id, metric):
            rows.append({"arm": run.arm, "seed": run.seed, "step": point.step,
                         "tokens": point.step * run.tokens_per_step, "value": point.value})
    return pd.DataFrame(rows, columns=["arm", "seed", "step", "tokens", "value"])


def collect_tuning(tracker: Tracker, study: str, metric: str) -> pd.DataFrame:
    """One row per tuning trial: arm, trial number, state, metric, tuned values (JSON)."""
    experiment_id = tracker.experiment_id(study, create=False)
    runs = tracker.find_runs(experiment_id, TUNE_KIND)
    rows = [{"arm": r.data.tags["arm"], "trial": int(r.data.tags["trial"]), "state": r.data.tags.get("state", ""),
             "value": r.data.metrics.get(metric, float("nan")) if r.data.tags.get("state") == "finished" else float("nan"),
             "tuned": r.data.tags.get("tuned", "")} for r in runs]
    frame = pd.DataFrame(rows, columns=["arm", "trial", "state", "value", "tuned"])
    return frame.sort_values(["arm", "trial"]).reset_index(drop=True)
