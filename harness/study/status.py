"""Where a study stands, read from the ledger (what is queued or running, on which worker,
how far along) and from MLflow (what settled, and how long finished runs took).

A run is, in this order of precedence:

- queued or running when its newest ledger trial waits or runs;
- finished or diverged when MLflow holds it settled;
- failed or interrupted when its last attempt ended so (the next `ablate run` queues it);
- missing when the ledger has it settled but MLflow does not hold it (a deleted or reset
  tracking store, a deleted run: the next `ablate run` trains it again);
- not planned when no `ablate run` has queued it yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.errors import AblateError
from harness.redaction import redact
from harness.study.ledger import Ledger
from harness.tracking.tracker import Tracker

# beside the run states: the ledger's view of runs MLflow does not hold (yet)
QUEUED = "queued"
MISSING = "missing"  # settled in the ledger, not held by MLflow
NOT_PLANNED = "not planned"  # in MLflow, but not a run of the current plan
FINISHED, RUNNING = RunState.FINISHED.value, RunState.RUNNING.value
STATES = [FINISHED, RUNNING, QUEUED, RunState.FAILED.value, RunState.INTERRUPTED.value, RunState.DIVERGED.value,
          MISSING, NOT_PLANNED]


@dataclass
class StudyStatus:
    name: str
    runs: pd.DataFrame  # one row per run: arm, seed, run_key, state, worker, step, steps, heartbeat_age_s
    arms: pd.DataFrame  # one row per arm: a count per state, and the mean wall time of its finished runs
    eta_seconds: float | None  # None until a run has finished

    @property
    def running(self) -> pd.DataFrame:
        """The runs in flight: arm, seed, worker, step of steps, seconds since the last heartbeat."""
        running = self.runs[self.runs["state"] == RUNNING]
        return running[["arm", "seed", "worker", "step", "steps", "heartbeat_age_s"]].astype(
            {"step": "Int64", "steps": "Int64"}).rename(columns={"heartbeat_age_s": "last heartbeat (s ago)"})

    def arms_in_some_state(self) -> pd.DataFrame:
        """The per-arm table without the states no run is in (which say nothing)."""
        return self.arms[[column for column in self.arms if column in ("arm", FINISHED) or
                          self.arms[column].fillna(0).ne(0).any()]]

    def summary(self) -> str:
        """Runs finished of all, the ETA, and what the next `ablate run` trains again."""
        missing = (self.runs["state"] == MISSING).sum()
        eta = "unknown until a run has finished" if self.eta_seconds is None else f"{self.eta_seconds / 60:.1f} min"
        return ((f"{missing} runs the ledger lists as finished are missing from the tracking store; the next "
                 "`ablate run` trains them again\n" if missing else "") +
                f"{(self.runs['state'] == 'finished').sum()} of {len(self.runs)} runs finished; ETA {eta}")


def study_status(name: str, tracker: Tracker, ledger: Ledger, planned: list[RunSpec] | None = None) -> StudyStatus:
    """The status of every run of `planned` (default: every run the ledger or MLflow knows)."""
    trials = {}  # run key -> its newest ledger trial
    for trial in ledger.trials():
        if "run_key" in trial.user_attrs:
            trials[trial.user_attrs["run_key"]] = trial
    experiment_id = tracker.experiment_id(name, create=False)
    tracked = tracker.runs_by_key(experiment_id) if experiment_id else {}
    if not trials and not tracked and planned is None:
        raise AblateError(f"study '{name}' has not been run with these stores (no MLflow experiment in "
                          f"{redact(tracker.uri)}, no ledger in {redact(ledger.url)}); check --tracking-uri and --storage")

    if planned is not None:
        runs = [(spec.arm, spec.seed, spec.key()) for spec in planned]
    else:
        known = {key: (t.user_attrs.get("arm", "?"), int(t.user_attrs.get("seed", -1))) for key, t in trials.items()}
        known.update({key: (run.data.tags["arm"], int(run.data.tags["seed"])) for key, run in tracked.items()})
        current = ledger.planned_keys()  # the plan queued last; runs only an earlier plan had are not counted
        runs = [(arm, seed, key) for key, (arm, seed) in known.items() if current is None or key in current]

    now = time.time()
    rows = []
    for arm, seed, key in runs:
        row = {"arm": arm, "seed": seed, "run_key": key, "state": NOT_PLANNED, "worker": "", "step": math.nan,
               "steps": math.nan, "heartbeat_age_s": math.nan, "wall_time_s": math.nan}
        trial, run = trials.get(key), tracked.get(key)
        recorded = RunState.of(run.data.tags) if run is not None else None
        if run is not None:
            row["wall_time_s"] = run.data.metrics.get("wall_time_s", math.nan)
        if trial is not None and trial.state.name in ("WAITING", "RUNNING"):
            row["state"] = QUEUED if trial.state.name == "WAITING" else RUNNING
            if trial.state.name == "RUNNING":
                progress = trial.user_attrs.get("progress", {})
                started = trial.datetime_start.timestamp() if trial.datetime_start else now
                row.update(worker=trial.user_attrs.get("worker", ""), step=progress.get("step", 0),
                           steps=progress.get("steps", math.nan), heartbeat_age_s=now - progress.get("at", started))
        elif recorded is not None and recorded.settled:
            row["state"] = recorded.value
        elif trial is not None and trial.state.name in ("COMPLETE", "PRUNED") \
                and not trial.user_attrs.get("superseded"):  # the ledger's word, which MLflow does not back
            row["state"] = MISSING
        elif trial is not None and trial.state.name == "FAIL":
            row["state"] = trial.user_attrs.get("state", RunState.INTERRUPTED.value)
        elif recorded is not None:  # its MLflow run says running, but no worker holds it: it was killed
            row["state"] = recorded.value if recorded == RunState.FAILED else RunState.INTERRUPTED.value
        rows.append(row)
    table = pd.DataFrame(rows, columns=["arm", "seed", "run_key", "state", "worker", "step", "steps",
                                        "heartbeat_age_s", "wall_time_s"])
    return StudyStatus(name, table, _per_arm(table), _eta(table))


def _per_arm(runs: pd.DataFrame) -> pd.DataFrame:
    counts = pd.crosstab(runs["arm"], runs["state"]).reindex(columns=STATES, fill_value=0)
    counts = counts.reindex(list(dict.fromkeys(runs["arm"])), fill_value=0)  # the plan's order
    finished = runs[runs["state"] == FINISHED].groupby("arm")["wall_time_s"].mean()
    counts["mean wall time (s)"] = finished.reindex(counts.index)
    return counts.reset_index()


def _eta(runs: pd.DataFrame) -> float | None:
    """Seconds until every run has settled, at the finished runs' mean wall time per arm (all
    arms' mean where an arm has none yet), shared among the workers running now."""
    finished = runs[runs["state"] == FINISHED]
    if finished.empty:
        return None if (runs["state"] != RunState.DIVERGED.value).any() else 0.0
    per_arm = finished.groupby("arm")["wall_time_s"].mean()
    overall = finished["wall_time_s"].mean()
    left = 0.0
    for row in runs.itertuples():
        seconds = per_arm.get(row.arm, overall)
        if row.state in (QUEUED, RunState.FAILED.value, RunState.INTERRUPTED.value, MISSING, NOT_PLANNED):
            left += seconds
        elif row.state == RUNNING:
            done = row.step / row.steps if row.steps and not math.isnan(row.steps) else 0.0
            left += seconds * max(0.0, 1.0 - done)
    workers = max(1, runs.loc[runs["state"] == RUNNING, "worker"].nunique())
    return left / workers
