"""The one vocabulary of a run's state.

MLflow holds it as the run's `state` tag beside its own status, the ledger as an Optuna
trial state, and a re-run reads it to decide what to do: a settled run is not trained
again, any other continues from its checkpoint in the same MLflow run. Comparison runs and
tuning trials use the same states.
"""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"  # the loss went non-finite or blew up: final, and part of the record
    PRUNED = "pruned"  # stopped early on purpose (a tuning trial the pruner judged)
    FAILED = "failed"  # could not go on (out of memory, an unusable checkpoint): tried again
    INTERRUPTED = "interrupted"  # Ctrl-C, or a worker killed or preempted: resumed

    @property
    def settled(self) -> bool:
        """True when a re-run leaves the run as it is."""
        return self in (RunState.FINISHED, RunState.DIVERGED, RunState.PRUNED)

    @property
    def mlflow_status(self) -> str:
        return {RunState.RUNNING: "RUNNING", RunState.FINISHED: "FINISHED", RunState.DIVERGED: "FAILED",
                RunState.PRUNED: "FINISHED", RunState.FAILED: "FAILED", RunState.INTERRUPTED: "KILLED"}[self]

    @property
    def trial_state(self):
        """The Optuna trial state of a ledger trial or a tuning trial that ended in this state."""
        from optuna.trial import TrialState

        return {RunState.RUNNING: TrialState.RUNNING, RunState.FINISHED: TrialState.COMPLETE,
                RunState.DIVERGED: TrialState.PRUNED, RunState.PRUNED: TrialState.PRUNED,
                RunState.FAILED: TrialState.FAIL, RunState.INTERRUPTED: TrialState.FAIL}[self]

    @classmethod
    def of(cls, tags: dict[str, str]) -> "RunState":
        """The state recorded in a run's tags; a run without one was killed before it said."""
        try:
            return cls(tags.get("state", "running"))
        except ValueError:
            return cls.RUNNING
