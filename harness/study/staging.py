"""Staged studies: a run that starts from another study's run.

    train:
      init_from: {study: addition_pretrain, arm: base, seed: same}

Each run starts from the final checkpoint of the named study's run of that arm and seed
(`same`: the seed of the run that starts from it). The run is found through the other
study's ledger (its newest plan, in the same storage) and must have finished: a run still
queued, running, failed or diverged is no starting point, and the study stops before
training anything. The starting run key changes whenever the checkpoint's content does, so a
re-run of the first stage with other settings makes the second stage's runs new runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.config.train import StudyRun
from harness.errors import AblateError
from harness.redaction import redact
from harness.study.ledger import Ledger
from harness.tracking.tracker import RUN_KIND, Tracker
from harness.training.checkpoint import CHECKPOINT_NAME


class StudyRuns:
    """Turns `init_from: {study, arm, seed}` into that run's checkpoint path."""

    def __init__(self, storage_url: str, runs_dir: Path, tracker: Callable[[], Tracker] | None = None):
        self.storage_url = storage_url
        self.runs_dir = runs_dir
        self.tracker = tracker  # opened only to name a run whose checkpoint is gone
        self._finished: dict[str, dict[tuple[str, int], str]] = {}  # study -> (arm, seed) -> run key

    def __call__(self, spec: RunSpec) -> RunSpec:
        ref = spec.train.init_from
        if not isinstance(ref, StudyRun):
            return spec
        seed = spec.seed if ref.seed == "same" else ref.seed
        key = self._run_key(ref, seed, spec.arm)
        checkpoint = self.runs_dir / ref.study / key / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise AblateError(f"arm '{spec.arm}' starts from study '{ref.study}' arm '{ref.arm}' seed {seed} (run {key}), "
                              f"but its checkpoint {checkpoint} is gone (`ablate clean` removes finished runs' "
                              f"checkpoints). To train it again, delete it from MLflow "
                              f"({self._delete_command(ref, key)}) and run study '{ref.study}' again with `ablate "
                              "run`; or point init_from at a checkpoint")
        return spec.model_copy(update={"train": spec.train.model_copy(update={"init_from": str(checkpoint)})})

    def _delete_command(self, ref: StudyRun, key: str) -> str:
        """The MLflow command that deletes the run `key` of study `ref.study`, or where to do it."""
        if self.tracker is not None:
            tracker = self.tracker()
            experiment_id = tracker.experiment_id(ref.study, create=False)
            run = tracker.find_run(experiment_id, RUN_KIND, {"run_key": key}) if experiment_id else None
            if run is not None:
                return (f"MLFLOW_TRACKING_URI={redact(tracker.uri)} mlflow runs delete --run-id {run.info.run_id}, "
                        "or delete it in the MLflow UI")
        return f"the run tagged run_key={key}, in the MLflow UI"

    def _run_key(self, ref: StudyRun, seed: int, arm: str) -> str:
        runs = self._finished_runs(ref.study)
        if (ref.arm, seed) in runs:
            return runs[(ref.arm, seed)]
        ledger = Ledger(self.storage_url, ref.study)
        trials = ledger.trials()
        if not trials:
            raise AblateError(f"arm '{arm}' starts from study '{ref.study}', which has no plan in the storage "
                              f"{redact(self.storage_url)}; run it first (ablate run <its file>), with the same --storage")
        arms = sorted({t.user_attrs.get("arm") for t in trials})
        if ref.arm not in arms:
            raise AblateError(f"arm '{arm}' starts from arm '{ref.arm}' of study '{ref.study}', which has no such arm "
                              f"(its arms: {', '.join(arms)})")
        states = [t.user_attrs.get("state", t.state.name.lower()) for t in trials
                  if t.user_attrs.get("arm") == ref.arm and t.user_attrs.get("seed") == seed]
        where = f"study '{ref.study}' arm '{ref.arm}' seed {seed}"
        if not states:
            raise AblateError(f"arm '{arm}' starts from {where}, which that study's plan does not have (its seeds: "
                              f"{sorted({t.user_attrs.get('seed') for t in trials})}); give it that seed, or set "
                              "init_from's seed")
        raise AblateError(f"arm '{arm}' starts from {where}, which has not finished ({', '.join(states)}); "
                          f"run study '{ref.study}' to the end first")

    def _finished_runs(self, study: str) -> dict[tuple[str, int], str]:
        if study not in self._finished:
            trials = Ledger(self.storage_url, study).trials()
            self._finished[study] = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.user_attrs["run_key"]
                                     for t in trials if t.user_attrs.get("state") == RunState.FINISHED.value}
        return self._finished[study]
