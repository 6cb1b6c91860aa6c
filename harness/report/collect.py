"""Read one execution of a study back from MLflow: its plan, one row per planned run, the
curves, the tuning trials.

A report is about one plan: runs are found by the run keys the plan lists, so runs of
another configuration of the same study are never pooled into an arm (a run whose
configuration is identical serves every plan that lists it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.config.records import PlanRecord
from harness.config.run_state import RunState
from harness.errors import AblateError
from harness.redaction import redact
from harness.tracking.tracker import TUNE_KIND, Tracker

NUMERIC_PARAMS = ["params", "params_non_embedding", "flops_per_token", "tokens_per_step", "unigram_loss", "bigram_loss",
                  "data_epochs", "tokens_per_param", "vocab_size"]
# a planned run MLflow does not hold yet
NOT_RUN = "not run"


@dataclass
class Collected:
    parent_run_id: str
    plan: PlanRecord
    results: pd.DataFrame  # one row per planned run, in plan order (arm, then seed)
    left_out: int  # runs of the study that belong to other plans
    versions: list[str]  # the ablate versions and commits the runs were trained with


def collect_runs(tracker: Tracker, study: str, plan_id: str | None = None) -> Collected:
    """The runs of the study's newest plan (or of the execution `plan_id`)."""
    experiment_id = tracker.experiment_id(study, create=False)
    if experiment_id is None:
        raise AblateError(f"no MLflow experiment '{study}' in {redact(tracker.uri)}; run the study first")
    parent, plan = tracker.plan(experiment_id, plan_id)
    tracked = tracker.runs_by_key(experiment_id)
    rows, logged = [], set()
    for planned in plan.runs:
        run = tracked.get(planned.run_key)
        if run and RunState.of(run.data.tags) == RunState.FINISHED:
            logged |= set(run.data.metrics)
        row = {"run_id": run.info.run_id if run else "", "arm": planned.arm, "seed": planned.seed,
               "run_key": planned.run_key, "state": RunState.of(run.data.tags).value if run else NOT_RUN,
               "failure_reason": run.data.tags.get("failure_reason", "") if run else "",
               "device": run.data.tags.get("device", "") if run else "",
               "attention_backend": run.data.tags.get("attention_backend", "") if run else "",
               "speed_caveat": _speed_caveat(run.data.tags) if run else "",
               "version": _version(run) if run else ""}
        params = run.data.params if run else {}
        row.update({name: float(params[name]) if name in params else math.nan for name in NUMERIC_PARAMS})
        row.update(run.data.metrics if run else {})
        if "avg_tokens_per_s" in row:  # the run's throughput, not its last interval's
            row["tokens_per_s"] = row.pop("avg_tokens_per_s")
        rows.append(row)
    results = pd.DataFrame(rows)
    if not (results["state"] == RunState.FINISHED.value).any():
        states = results["state"].value_counts()
        if NOT_RUN not in states and RunState.RUNNING.value not in states:  # all settled, none finished
            ended = ", ".join(f"{count} {state}" for state, count in states.items())
            reasons = sorted({r for r in results["failure_reason"] if r})[:2]
            raise AblateError(f"no run of study '{study}' finished, so there is nothing to compare: {ended}"
                              + (f" ({'; '.join(reasons)})" if reasons else "")
                              + ". Fix the settings (a lower train.lr, a smaller batch) and run it again")
        raise AblateError(f"study '{study}' has no finished run in its plan yet (execution {parent}); "
                          "`ablate status` says where it stands")
    if plan.metric not in logged:  # a misspelt metric would report every arm as empty
        raise AblateError(f"report.metric '{plan.metric}' was never logged by the study's finished runs; they log "
                          f"{', '.join(sorted(logged))}. Set report.metric to one of them and run the study again "
                          "(its runs are not trained again)")
    order = {arm.name: i for i, arm in enumerate(plan.arms)}
    results = results.sort_values(["arm", "seed"], key=lambda c: c.map(order) if c.name == "arm" else c,
                                  kind="stable").reset_index(drop=True)
    planned_keys = set(results["run_key"])
    left_out = sum(key not in planned_keys for key in tracked)
    versions = sorted({v for v in results["version"] if v})
    return Collected(parent, plan, results, left_out, versions)


def _speed_caveat(tags: dict) -> str:
    """Why a run's tokens/s and wall time are not its variant's speed: the machine slowed it down
    (the `slowdown` notice), or it trained over several attempts (resumed)."""
    caveats = ["slowed"] if "slowdown" in tags else []
    if int(tags.get("attempt", "1") or 1) > 1:
        caveats.append("resumed")
    return ", ".join(caveats)


def _version(run) -> str:
    tags = run.data.tags
    return f"ablate {tags.get('ablate_version', '?')} at {tags.get('git_commit', 'unknown')}"


def collect_curves(tracker: Tracker, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long table: arm, seed, step, tokens, value, for every run's history of `metric`."""
    rows = []
    for run in runs[runs["run_id"] != ""].itertuples():
        for step, value in tracker.metric_history(run.run_id, metric):
            rows.append({"arm": run.arm, "seed": run.seed, "step": step, "tokens": step * run.tokens_per_step,
                         "value": value})
    return pd.DataFrame(rows, columns=["arm", "seed", "step", "tokens", "value"])


def collect_tuning(tracker: Tracker, study: str, metric: str) -> pd.DataFrame:
    """One row per tuning trial: arm, trial number, state, metric, tuned values (JSON)."""
    experiment_id = tracker.experiment_id(study, create=False)
    runs = tracker.find_runs(experiment_id, TUNE_KIND)
    rows = [{"arm": r.data.tags["arm"], "trial": int(r.data.tags["trial"]), "state": r.data.tags.get("state", ""),
             "value": r.data.metrics.get(metric, float("nan")) if RunState.of(r.data.tags) == RunState.FINISHED else float("nan"),
             "tuned": r.data.tags.get("tuned", "")} for r in runs]
    frame = pd.DataFrame(rows, columns=["arm", "trial", "state", "value", "tuned"])
    return frame.sort_values(["arm", "trial"]).reset_index(drop=True)
