"""Study: everything `ablate` does with a study, as a Python API a notebook can call.

    from harness import Study

    study = Study.load("studies/norm_placement.yaml", overrides=["base.train.steps=100"])
    study.estimate()          # per arm: parameters, FLOPs/token, tokens and seconds per run
    summary = study.run()     # train what is not finished, track it in MLflow, write the report
    study.status()            # per arm: finished, running, queued, failed, diverged; an ETA
    study.report()            # the summary again, rebuilt from MLflow alone

`ablate run`, `ablate worker`, `ablate status`, `ablate clean` and `ablate report` are thin
layers on these methods. Every mistake a user can make fails in :meth:`Study.load`, before
MLflow or the ledger is touched.
"""

from __future__ import annotations

import contextlib
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from harness.errors import AblateError
from harness.progress import RunProgress, make_progress
from harness.redaction import redact
from harness.registry import load_plugin
from harness.report import build_report
from harness.spec import RunSpec
from harness.study import launch
from harness.study.clean import CleanResult, clean_runs
from harness.study.ledger import DEFAULT_STORAGE, Ledger
from harness.study.plan import check_data, estimate, expand
from harness.study.schema import StudySpec, load_study
from harness.study.status import StudyStatus, study_status
from harness.study.worker import WorkerOutcome, work
from harness.tracking.tracker import Tracker
from harness.training.trainer import CHECKPOINT_NAME, Trainer, TrainResult, resolve_device


class Study:
    def __init__(self, spec: StudySpec, file: Path, *, overrides: list[str], profile: str | None,
                 plugins: list[str], tracking_uri: str | None, storage: str, runs_dir: Path, reports_dir: Path,
                 console: Console):
        self.spec = spec
        self.file = file
        self.overrides = overrides
        self.profile = profile
        self.plugins = plugins
        self.tracking_uri = tracking_uri
        self.storage = storage
        self.runs_dir = runs_dir
        self.reports_dir = reports_dir
        self.console = console
        self.runs: list[RunSpec] = expand(spec, str(file))
        self.datasets = check_data(self.runs)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None, profile: str | None = None,
             plugins: list[str] | None = None, *, tracking_uri: str | None = None, storage: str | None = None,
             runs_dir: str | Path = "runs", reports_dir: str | Path = "reports",
             console: Console | None = None) -> "Study":
        """Read and check a study: its file, a profile, `--set` overrides and plugins, every
        arm resolved and its data loaded. Nothing is tracked or trained yet.

        `tracking_uri` defaults to $MLFLOW_TRACKING_URI, else MLflow's default; `storage`
        (the ledger) to $ABLATE_STORAGE, else sqlite:///optuna.db.
        """
        for plugin in plugins or []:
            load_plugin(plugin)
        spec = load_study(path, overrides, profile)
        return cls(spec, Path(path), overrides=list(overrides or []), profile=profile, plugins=list(plugins or []),
                   tracking_uri=tracking_uri, storage=storage or DEFAULT_STORAGE, runs_dir=Path(runs_dir),
                   reports_dir=Path(reports_dir), console=console or Console(stderr=True))

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.storage, self.name)

    @property
    def device(self) -> torch.device:
        """Where the runs train (the first run's `train.device`, resolved here)."""
        return resolve_device(self.runs[0].train.device)

    # ---- what it costs -----------------------------------------------------------------------

    def estimate(self) -> pd.DataFrame:
        """Per arm: seeds, non-embedding parameters, FLOPs/token, tokens and measured seconds per run."""
        return estimate(self.spec, self.runs, self.datasets)

    # ---- running it --------------------------------------------------------------------------

    def run(self, jobs: int = 1) -> pd.DataFrame | None:
        """Train every run that is not finished, track it in MLflow and write the report.

        `jobs` > 1 starts that many local worker processes; 0 only plans the study for
        `ablate worker`s elsewhere (and returns None). Returns the report's summary, one row
        per arm.
        """
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        parent = tracker.start_study(tracker.experiment_id(self.name), self.spec, len(self.runs), str(self.file))
        ledger.open(parent)
        workers = []
        try:
            if self.spec.tune:
                from harness.study.tuning import retry_unsettled_trials

                retry_unsettled_trials(self.spec, ledger.storage)  # before any worker may claim a trial
            if jobs > 1:  # they tune (when the study tunes), then train what the plan below queues
                workers = launch.start_workers(jobs, self.file, self.overrides, self.plugins, self.profile,
                                               tracker.uri, self.storage, self.runs_dir)
            if jobs == 0:
                self.console.print(f"start workers with: {self.worker_command()}", soft_wrap=True)
            if self.spec.tune:
                self._tune(parent, wait_for_workers=jobs != 1)
            ledger.release_dead_local_claims()  # an `ablate run` killed here before: its run goes back in the queue
            queued = ledger.plan(self.runs)
            self.console.print(f"{len(self.runs)} runs planned, {queued} queued, "
                               f"{len(self.runs) - queued} finished or in progress already")
            if jobs == 0:  # the workers train; `ablate report` once they are done
                tracker.end_study(parent)
                return None
            if jobs == 1:
                outcome = work(self.runs, self.spec.report.metric, tracker, ledger, self.runs_dir, self.console)
                self.console.print(f"{outcome.trained} runs trained")
            else:
                launch.wait_for(workers)
        except BaseException:
            launch.stop(workers)
            with contextlib.suppress(Exception):  # the store may be what failed
                tracker.end_study(parent, "KILLED")
            raise
        self._send_kept()
        tracker.patiently(lambda: tracker.end_study(parent), "ending the study")
        return self._report(parent)

    def train_one(self, seed: int | None = None, fresh: bool = False) -> tuple[TrainResult, Path]:
        """Train the study's single run (a study of one arm) without the ledger or MLflow;
        returns its result and checkpoint. It resumes from its checkpoint unless `fresh`."""
        if len(self.spec.arm_list()) > 1:
            raise AblateError(f"{self.file} has {len(self.spec.arm_list())} arms; `ablate train` runs one, "
                              "`ablate run` a study")
        spec = self.runs[0] if seed is None else self.runs[0].model_copy(update={"seed": seed})
        run_dir = self.runs_dir / self.name / spec.key()
        trainer_checkpoint = run_dir / CHECKPOINT_NAME
        if fresh:
            trainer_checkpoint.unlink(missing_ok=True)
        with make_progress(self.console) as progress:
            bar = RunProgress(progress, f"{self.name} seed {spec.seed}", spec.train.steps)
            result = Trainer(spec, run_dir, bar).run()
        return result, trainer_checkpoint

    def work(self) -> WorkerOutcome:
        """Be one worker of a study that `run` planned: help tune it (when it tunes), then
        claim and train its queued runs until none is left."""
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        if self.spec.tune:
            from harness.study.tuning import tune_all

            with make_progress(self.console) as progress:
                tune_all(self.spec, ledger.storage, tracker, ledger.parent_run_id(), self.runs_dir, progress)
        ledger.wait_until_planned()
        if self.spec.tune:
            self._use_best_settings()
        return work(self.runs, self.spec.report.metric, tracker, ledger, self.runs_dir, self.console)

    def worker_command(self) -> str:
        """The command that starts one more worker of this study on another machine."""
        options = [*(f"--set {s}" for s in self.overrides), *(f"--plugin {p}" for p in self.plugins),
                   *([f"--profile {self.profile}"] if self.profile else [])]
        return (f"ablate worker {self.file} --storage {redact(self.storage)} "
                f"--tracking-uri {redact(self.tracker.uri)} {' '.join(options)}").rstrip()

    def _tune(self, parent_run_id: str, wait_for_workers: bool) -> None:
        """Tune every arm (here, or after waiting for the workers to spend the budget), then
        plan the runs with each arm's best setting."""
        from harness.study.tuning import tune_all, wait_for_tuning

        if wait_for_workers:
            self.console.print("waiting for the workers to tune every arm")
            wait_for_tuning(self.spec, self.ledger.storage)
        with make_progress(self.console) as progress:  # what is left: all of it here, or a dead worker's trial
            tune_all(self.spec, self.ledger.storage, self.tracker, parent_run_id, self.runs_dir, progress)
        self._use_best_settings()

    def _use_best_settings(self) -> None:
        from harness.study.tuning import best_settings

        self.runs = expand(self.spec, str(self.file), best_settings(self.spec, self.ledger.storage))
        self.datasets = check_data(self.runs)

    def _send_kept(self) -> None:
        """Send what runs kept on disk while the tracking store was unreachable."""
        sent = self.tracker.patiently(lambda: self.tracker.send_kept(self.runs_dir / self.name), "sending kept records")
        if sent:
            self.console.print(f"sent the tracking records that {sent} runs kept while the tracking store was away")

    # ---- reading it back ---------------------------------------------------------------------

    def report(self) -> pd.DataFrame:
        """Rebuild the report from MLflow alone; returns its summary, one row per arm."""
        return self._report(None)

    def _report(self, parent_run_id: str | None) -> pd.DataFrame:
        tracker = self.tracker
        result = tracker.patiently(lambda: build_report(tracker, self.name, self.reports_dir, parent_run_id),
                                   "reading the study back")
        self.console.print(f"report: {result.folder / 'report.md'}")
        for row in result.results[result.results["state"] != "finished"].itertuples():
            self.console.print(f"[yellow]{row.state}:[/] {row.arm} seed {row.seed}: {row.failure_reason}")
        return result.summary

    def status(self) -> StudyStatus:
        """Where the study stands: per arm finished, running, queued, failed and diverged runs,
        the runs in flight with their worker and last heartbeat, and an ETA."""
        planned = self.runs
        if self.spec.tune:  # the runs' keys depend on the tuned settings: until then, what the ledger knows
            try:
                self._use_best_settings()
                planned = self.runs
            except AblateError:
                planned = None
        return study_status(self.name, self.tracker, self.ledger, planned)

    def clean(self, dry_run: bool = False) -> CleanResult:
        """Delete the checkpoints and locks of settled runs (keeping any records not yet sent)."""
        return clean_runs(self.name, self.tracker, self.runs_dir, dry_run)
