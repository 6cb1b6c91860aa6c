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

from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape

from harness.config.run import MAX_SEED, RunSpec
from harness.config.run_state import RunState
from harness.config.study import StudySpec, load_study
from harness.errors import AblateError
from harness.notices import make_console
from harness.progress import RunProgress, make_progress
from harness.redaction import redact
from harness.registry import load_plugin
from harness.study import launch
from harness.study.clean import CleanResult, clean_runs
from harness.study.ledger import DEFAULT_STORAGE, Ledger, plan_id
from harness.study.lifecycle import RunOutcome, train_tracked
from harness.study.plan import Tuned, complete, estimate, plan_record, resolve
from harness.study.slurm import SlurmSettings, submit_workers
from harness.study.staging import StudyRuns
from harness.study.status import StudyStatus, study_status
from harness.study.worker import WorkerOutcome, work
from harness.tracking.tracker import RUN_KIND, Tracker, tracking_store_exists
from harness.training.checkpoint import CHECKPOINT_NAME
from harness.training.distributed import world_size
from harness.training.trainer import Trainer, resolve_device


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
        self._tuned: Tuned | None = None  # each arm's best tuned settings, once tuned
        self._plan_parent: str | None = None  # the execution whose recorded plan is this one's, once planned
        # the runs of other studies that runs start from
        self.locate = StudyRuns(self.storage, self.runs_dir, lambda: self.tracker)
        self.runs, self.datasets = resolve(spec, str(file), locate=self.locate)
        # this configuration's ledger; taken before tuning, which changes the runs' keys
        self.plan_id = plan_id(self.runs, spec.tune.model_dump_json() if spec.tune else "")

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
        loaded = dict(load_plugin(plugin) for plugin in plugins or [])
        spec = load_study(path, overrides, profile)
        spec.plugin_code.update(loaded)
        return cls(spec, Path(path), overrides=list(overrides or []), profile=profile, plugins=list(plugins or []),
                   tracking_uri=tracking_uri, storage=storage or DEFAULT_STORAGE, runs_dir=Path(runs_dir),
                   reports_dir=Path(reports_dir), console=console or make_console())

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.storage, self.name, self.plan_id)

    @property
    def device(self) -> torch.device:
        """Where the runs train (the first run's `train.device`, resolved here)."""
        return resolve_device(self.runs[0].train.device)

    # ---- what it costs -----------------------------------------------------------------------

    def estimate(self) -> pd.DataFrame:
        """Per arm: planned runs, how many MLflow holds settled already, non-embedding
        parameters, FLOPs/token, tokens and measured seconds per run."""
        return estimate(self.runs, self.datasets, self.settled_keys())

    def settled_keys(self) -> set[str]:
        """Run keys MLflow holds settled (none when the tracking store does not exist yet: it is
        not created by asking)."""
        if not tracking_store_exists(self.tracking_uri):
            return set()
        experiment_id = self.tracker.experiment_id(self.name, create=False)
        runs = self.tracker.runs_by_key(experiment_id) if experiment_id else {}
        return {key for key, run in runs.items() if RunState.of(run.data.tags).settled}

    def possible_runs(self) -> list[RunSpec]:
        """Every run the study may train: a sequential study's up to its max seeds per arm."""
        if not self.spec.sequential:
            return self.runs
        counts = {arm.name: self.spec.sequential.max for arm in self.spec.arm_list()}
        return resolve(self.spec, str(self.file), self._tuned, counts, self.locate)[0]

    # ---- running it --------------------------------------------------------------------------

    def run(self, jobs: int = 1, slurm: SlurmSettings | None = None) -> pd.DataFrame | None:
        """Train every run that is not finished, track it in MLflow and write the report.

        `jobs` > 1 starts that many local worker processes; 0 only plans the study for
        `ablate worker`s elsewhere (and returns None). With `slurm`, the `jobs` workers are
        submitted to SLURM as a job array, and run returns None once the study is planned.
        A study with `seeds: {min, max}` adds seeds while a verdict is unsettled. Returns the
        report's summary, one row per arm.
        """
        rule = self.spec.sequential
        if rule and (jobs == 0 or slurm):
            raise AblateError(f"{self.file}: seeds {{min, max}} are added by `ablate run` as verdicts settle, so it "
                              "cannot only plan the study; run it with local --jobs N (N >= 1)")
        if slurm and jobs < 1:
            raise AblateError("--launcher slurm needs --jobs N (N >= 1): how many workers to submit")
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        with tracker.execution(self.spec, len(self.runs), str(self.file)) as parent:
            ledger.open(parent, self.spec.report.metric)
            workers = []
            try:
                trained_here = self._execute(parent, jobs, slurm, workers)
            except BaseException:
                launch.stop(workers)  # each checkpoints its run and ends; none trains on orphaned
                raise
            if not trained_here:  # planned only: the workers train; `ablate report` once they are done
                return None
            self._send_kept()
        return self._report(self._plan_parent)

    def _execute(self, parent: str, jobs: int, slurm: SlurmSettings | None, workers: list) -> bool:
        """Tune, plan and train (here, or by local workers, which join `workers`) until every
        verdict that may add seeds has settled; False when the study is only planned here (for
        SLURM's workers or `ablate worker`s)."""
        tracker, ledger, rule = self.tracker, self.ledger, self.spec.sequential
        if self.spec.tune:
            from harness.study.tuning import retry_unsettled_trials

            retry_unsettled_trials(self.spec, ledger.storage)  # before any worker may claim a trial
        if slurm:  # they tune (when the study tunes), then train what the plan below queues
            array = submit_workers(self, jobs, slurm)
            self.console.print(f"submitted {jobs} workers to SLURM as job array {array[0].job_id.split('_')[0]} "
                               f"(logs in {array[0].paths.folder.parent}); watch them with `squeue --me` and "
                               f"`ablate status {self.file}`, then `ablate report {self.name}`", soft_wrap=True)
        elif jobs > 1:
            workers += self._start_workers(jobs)
        if jobs == 0:
            self.console.print(f"start workers with: {self.worker_command()}", soft_wrap=True)
        if self.spec.tune:
            self._tune(parent, wait_for_workers=jobs != 1 or slurm is not None)
        ledger.release_dead_local_claims()  # an `ablate run` killed here before: its run goes back in the queue
        while True:
            self._plan(parent)
            if jobs == 0 or slurm:
                return False
            if jobs == 1:
                outcome = work(self.runs, self.spec.report.metric, tracker, ledger, self.runs_dir, self.console)
                self.console.print(f"{outcome.trained} runs trained")
            else:
                launch.wait_for(workers)
                workers.clear()
            counts = self._more_seeds(self._report(self._plan_parent)) if rule else None
            if counts is None:
                return True
            added = [arm for arm, count in counts.items() if count > self._counts()[arm]]
            self.console.print(f"verdicts not settled yet: adding a seed to {', '.join(added)}")
            self.runs, self.datasets = resolve(self.spec, str(self.file), self._tuned, counts, self.locate)
            if jobs > 1:
                workers += self._start_workers(jobs)

    def _plan(self, parent: str) -> None:
        """Queue this plan's runs that MLflow does not hold settled, record the plan on the
        parent run, and say so."""
        planned = self.ledger.plan(self.runs, self.tracker.patiently(self.settled_keys, "reading the study's runs"))
        self._plan_parent = self.tracker.record_plan(parent, plan_record(self.spec, self.runs, str(self.file),
                                                                         self._tuned))
        if planned.missing:
            self.console.print(f"{planned.missing} runs the ledger lists as finished are missing from the tracking "
                               f"store {redact(self.tracker.uri)}: training them again (from their checkpoints, "
                               "which hold their curves, where runs/ still has them)", style="yellow", markup=False)
        self.console.print(f"{len(self.runs)} runs planned, {planned.queued} queued, "
                           f"{len(self.runs) - planned.queued} finished or in progress already")

    def _counts(self) -> dict[str, int]:
        """How many seeds each arm trains in the current plan."""
        counts: dict[str, int] = {}
        for spec in self.runs:
            counts[spec.arm] = counts.get(spec.arm, 0) + 1
        return counts

    def _more_seeds(self, summary: pd.DataFrame) -> dict[str, int] | None:
        """The next look of a sequential study: one more seed for every unsettled arm (and the
        baseline, which pairs with them), or None when every verdict is settled, every arm is
        at its most seeds, or a run failed (the next `ablate run` retries it first)."""
        if (summary["failed"] > 0).any() or (summary["unfinished"] > 0).any():
            return None
        counts = self._counts()
        unsettled = [arm for arm in summary.loc[~summary["settled"], "arm"] if counts[arm] < self.spec.sequential.max]
        if not unsettled:
            return None
        for arm in unsettled:
            counts[arm] += 1
        counts[self.spec.baseline] = max(counts.values())
        return counts

    def _start_workers(self, jobs: int) -> list:
        return launch.start_workers(jobs, self.file, self.overrides, self.plugins, self.profile, self.tracker.uri,
                                    self.storage, self.runs_dir)

    def train_one(self, seed: int | None = None, fresh: bool = False) -> tuple[RunOutcome, Path]:
        """Train the study's single run (a study of one arm), tracked in MLflow like a one-arm
        study: its experiment, a parent run with the plan, the run with the same params, tags and
        artifacts (`ablate report` reads it back). No ledger. A run MLflow holds settled is not
        trained again (`outcome.trained` is False). It resumes from its checkpoint unless
        `fresh`. Under data parallelism (torchrun, srun) it is not tracked: every process trains,
        and none may open MLflow runs of its own. Returns the outcome and the checkpoint's path."""
        if len(self.spec.arm_list()) > 1:
            raise AblateError(f"{self.file} has {len(self.spec.arm_list())} arms; `ablate train` runs one, "
                              "`ablate run` a study")
        spec = self.runs[0]
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise AblateError(f"--seed {seed} is outside 0 to {MAX_SEED}: a seed is a 32-bit unsigned integer")
        if seed is not None and seed != spec.seed:
            spec = complete([spec.model_copy(update={"seed": seed})], self.locate)[0][0]
        run_dir = self.runs_dir / self.name / spec.key()
        if fresh:
            (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
        if world_size() > 1:  # every data-parallel process trains; none opens MLflow runs of its own
            with make_progress(self.console) as progress:
                result = Trainer(spec, run_dir, RunProgress(progress, f"{self.name} seed {spec.seed}",
                                                            spec.train.steps)).run()
            return RunOutcome(result.status, result.metrics, reason=result.reason), run_dir / CHECKPOINT_NAME
        tracker = self.tracker
        self._send_kept()
        with tracker.execution(self.spec, 1, str(self.file)) as parent:
            tracker.record_plan(parent, plan_record(self.spec, [spec], str(self.file)))
            with make_progress(self.console) as progress:
                outcome = train_tracked(spec, run_dir, tracker, parent, progress, kind=RUN_KIND)
        return outcome, run_dir / CHECKPOINT_NAME

    def work(self) -> WorkerOutcome:
        """Be one worker of a study that `run` planned: help tune it (when it tunes), then
        claim and train its queued runs until none is left."""
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        if self.spec.tune:
            from harness.study.tuning import tune_all

            with make_progress(self.console) as progress:
                tune_all(self.spec, ledger.storage, tracker, ledger.parent_run_id(), self.runs_dir, progress, self.locate)
        ledger.wait_until_planned()
        if self.spec.tune:
            self._use_best_settings()
        return work(self.possible_runs(), self.spec.report.metric, tracker, ledger, self.runs_dir, self.console)

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
            tune_all(self.spec, self.ledger.storage, self.tracker, parent_run_id, self.runs_dir, progress, self.locate)
        self._use_best_settings()
        for reason in self._tuned.dead.values():
            self.console.print(f"{reason} The other arms are compared without it.", style="yellow", markup=False)

    def _use_best_settings(self) -> None:
        from harness.study.tuning import best_settings

        self._tuned = best_settings(self.spec, self.ledger.storage)
        self.runs, self.datasets = resolve(self.spec, str(self.file), self._tuned, locate=self.locate)

    def _send_kept(self) -> None:
        """Send what runs kept on disk while the tracking store was unreachable."""
        sent = self.tracker.patiently(lambda: self.tracker.send_kept(self.runs_dir / self.name), "sending kept records")
        if sent:
            self.console.print(f"sent the tracking records that {sent} runs kept while the tracking store was away")

    # ---- reading it back ---------------------------------------------------------------------

    def report(self, plan: str | None = None) -> pd.DataFrame:
        """Rebuild the report of the newest execution's plan (or of the execution whose parent
        run id is `plan`) from MLflow alone; returns its summary, one row per arm."""
        return self._report(plan)

    def _report(self, plan_id: str | None) -> pd.DataFrame:
        from harness.report import build_report  # statistics and figures: loaded by what reports, not by workers

        tracker = self.tracker
        result = tracker.patiently(lambda: build_report(tracker, self.name, self.reports_dir, plan_id),
                                   "reading the study back")
        self.console.print(f"report: {result.folder / 'report.md'}")
        for row in result.results[~result.results["state"].isin(["finished", "not run"])].itertuples():
            self.console.print(f"[yellow]{row.state}:[/] {escape(f'{row.arm} seed {row.seed}: {row.failure_reason}')}")
        return result.summary

    def status(self) -> StudyStatus:
        """Where the study stands: per arm finished, running, queued, failed and diverged runs,
        the runs in flight with their worker and last heartbeat, and an ETA."""
        planned = None if self.spec.sequential else self.runs  # a sequential study plans as it goes
        if self.spec.tune:  # the runs' keys depend on the tuned settings: until then, what the ledger knows
            try:
                self._use_best_settings()
                planned = None if self.spec.sequential else self.runs
            except AblateError:
                planned = None
        return study_status(self.name, self.tracker, self.ledger, planned)

    def clean(self, dry_run: bool = False) -> CleanResult:
        """Delete the checkpoints and locks of settled runs (keeping any records not yet sent)."""
        return clean_runs(self.name, self.tracker, self.runs_dir, dry_run)
