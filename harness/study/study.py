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

import os
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
from harness.study.clean import CleanResult, clean_runs
from harness.study.ledger import DEFAULT_STORAGE, Ledger, plan_id
from harness.study.lifecycle import RunOutcome, train_tracked
from harness.study.plan import Tuned, complete, estimate, plan_record, resolve
from harness.study.executors import Executor, local_executor
from harness.study.seed_policy import FixedSeeds, SequentialSeeds
from harness.study.staging import StudyRuns
from harness.study.status import StudyStatus, study_status
from harness.study.worker import WorkerOutcome, work
from harness.tracking.tracker import RUN_KIND, Tracker, tracking_store_exists
from harness.training.checkpoint import CHECKPOINT_NAME
from harness.training.distributed import world_size
from harness.training.build import RunInputs, dataset_key, resolve_device
from harness.training.trainer import Trainer


class Study:
    """A handle on a study: opening it reads its file (or only takes its name); what it plans,
    trains and reports is computed when a method asks for it."""

    def __init__(self, spec: StudySpec | None, file: Path | None, *, name: str | None = None,
                 overrides: list[str] = (), profile: str | None = None, plugins: list[str] = (),
                 tracking_uri: str | None = None, storage: str = DEFAULT_STORAGE, runs_dir: Path = Path("runs"),
                 reports_dir: Path = Path("reports"), console: Console | None = None):
        self._spec = spec
        self.file = file
        self.name = spec.name if spec else name
        self.overrides = list(overrides)
        self.profile = profile
        self.plugins = list(plugins)
        self.tracking_uri = tracking_uri
        self.storage = storage
        self.runs_dir = Path(runs_dir)
        self.reports_dir = Path(reports_dir)
        self.console = console or make_console()
        self._tuned: Tuned | None = None  # each arm's best tuned settings, once tuned
        self._plan_parent: str | None = None  # the execution whose recorded plan is this one's, once planned
        self._runs: list[RunSpec] | None = None  # the current plan's runs, once resolved (tuning and seeds change them)
        self.inputs = RunInputs()  # the runs' data and starting weights, each loaded once
        # the runs of other studies that runs start from
        self.locate = StudyRuns(self.storage, self.runs_dir, lambda: self.tracker)

    @classmethod
    def open(cls, reference: str | Path, overrides: list[str] | None = None, profile: str | None = None,
             plugins: list[str] | None = None, **stores) -> "Study":
        """A study by its file (`.yaml`, `.yml`: read and checked, plugins loaded) or by its
        name (the MLflow experiment: report, status and clean need nothing more). Nothing is
        resolved, loaded, tracked or trained yet. `stores` are load's keyword arguments."""
        if str(reference).endswith((".yaml", ".yml")):
            loaded = dict(load_plugin(plugin) for plugin in plugins or [])
            spec = load_study(reference, overrides, profile)
            spec.plugin_code.update(loaded)
            return cls(spec, Path(reference), overrides=list(overrides or []), profile=profile,
                       plugins=list(plugins or []), **_stores(**stores))
        return cls(None, None, name=str(reference), **_stores(**stores))

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None, profile: str | None = None,
             plugins: list[str] | None = None, *, tracking_uri: str | None = None, storage: str | None = None,
             runs_dir: str | Path = "runs", reports_dir: str | Path = "reports",
             console: Console | None = None) -> "Study":
        """Open a study file and check it whole: a profile, `--set` overrides and plugins, every
        arm resolved and its data loaded. Nothing is tracked or trained yet.

        `tracking_uri` defaults to $MLFLOW_TRACKING_URI, else MLflow's default; `storage`
        (the ledger) to $ABLATE_STORAGE, else sqlite:///optuna.db.
        """
        study = cls.open(Path(path), overrides, profile, plugins, tracking_uri=tracking_uri, storage=storage,
                         runs_dir=runs_dir, reports_dir=reports_dir, console=console)
        study.check()
        return study

    def check(self) -> None:
        """Resolve every run (starting points found, data loaded): every mistake in the study
        fails here, before MLflow or the ledger is touched."""
        self.runs  # noqa: B018 - resolving is the check

    @property
    def spec(self) -> StudySpec:
        if self._spec is None:
            raise AblateError(f"study '{self.name}' was given by name; this needs its study file")
        return self._spec

    @property
    def runs(self) -> list[RunSpec]:
        """The runs of the current plan (each arm's first seeds; tuned settings once tuned)."""
        if self._runs is None:
            self._runs = self._first_plan
        return self._runs

    @cached_property
    def _first_plan(self) -> list[RunSpec]:
        return resolve(self.spec, str(self.file), locate=self.locate, inputs=self.inputs)

    def _replan(self, counts: dict[str, int] | None = None) -> None:
        self._runs = resolve(self.spec, str(self.file), self._tuned, counts, self.locate, self.inputs)

    @cached_property
    def plan_id(self) -> str:
        """This configuration's ledger: taken from the plan before tuning, which changes the runs' keys."""
        return plan_id(self._first_plan, self.spec.tune.model_dump_json() if self.spec.tune else "")

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.storage, self.name, self.plan_id if self._spec else None)

    @property
    def device(self) -> torch.device:
        """Where the runs train (the first run's `train.device`, resolved here)."""
        return resolve_device(self.runs[0].train.device)

    # ---- what it costs -----------------------------------------------------------------------

    def estimate(self) -> pd.DataFrame:
        """Per arm: planned runs, how many MLflow holds settled already, non-embedding
        parameters, FLOPs/token, tokens and measured seconds per run."""
        return estimate(self.runs, self.inputs, self.settled_keys())

    def estimate_summary(self, plan: pd.DataFrame) -> str:
        """What the estimate adds up to: runs left and their minutes of training, and how far a
        sequential study may grow."""
        left = plan["runs"] - plan["finished"]
        minutes = (plan["seconds_per_run"] * left).sum() / 60
        cost = f"{minutes:.1f} min of training on {self.device}" if plan["time_from"].str.startswith("measured").all() \
            else f"{minutes / 60:.1f} GPU hours ({plan['time_from'].iloc[0]}; no CUDA here to measure a step)"
        text = f"{len(self.runs)} runs, {plan['finished'].sum()} finished already; the other {left.sum()} estimated at {cost}"
        if (plan["data_epochs"] > 1).any():
            text += (f"\na run sees its training data up to {plan['data_epochs'].max():,.1f} times (epochs): its verdict "
                     "is about a model that has seen its corpus that often")
        if self.spec.sequential:
            text += (f"\nseeds are added one at a time while a verdict is unsettled: up to "
                     f"{self.spec.sequential.max} per arm, {len(self.possible_runs())} runs at most")
        return text

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
        return resolve(self.spec, str(self.file), self._tuned, counts, self.locate, self.inputs)

    def prepare(self) -> pd.DataFrame:
        """Every corpus the study's runs may train on (a sequential study's up to its most seeds),
        tokenized into the cache with its reference losses, so that workers (local or SLURM)
        open prepared token files instead of each tokenizing the corpus. One row per corpus:
        dataset, tokenizer, train and validation tokens, sha256. Raises AblateError as check()."""
        rows = {}
        for spec in self.possible_runs():
            key = dataset_key(spec)
            if key in rows:
                continue
            dataset = self.inputs.dataset(spec)
            if hasattr(dataset, "reference_losses"):
                dataset.reference_losses()
            metadata = getattr(dataset, "metadata", {})
            rows[key] = {"dataset": spec.data.dataset.name, "tokenizer": getattr(dataset, "tokenizer", None) and
                         dataset.tokenizer.kind, "vocab_size": dataset.vocab_size,
                         "train_tokens": metadata.get("train_tokens"), "val_tokens": metadata.get("val_tokens"),
                         "sha256": str(metadata.get("sha256", ""))[:12]}
        return pd.DataFrame(list(rows.values()))

    # ---- running it --------------------------------------------------------------------------

    def run(self, jobs: int = 1, *, executor: Executor | None = None) -> pd.DataFrame | None:
        """Train every run that is not finished, track it in MLflow and write the report.

        `jobs` > 1 starts that many local worker processes; 0 only plans the study for
        `ablate worker`s elsewhere (and returns None). `executor` (an
        harness.study.executors.Executor, such as harness.study.slurm.SlurmArray) replaces
        `jobs`; run returns None when its workers train elsewhere. A study with `seeds: {min, max}`
        adds seeds while a verdict is unsettled. Returns the report's summary, one row per arm.
        """
        executor = executor or local_executor(jobs)
        seeds = self.seed_policy()
        if seeds.adds_seeds and not executor.trains_here:
            raise AblateError(f"{self.file}: seeds {{min, max}} are added by `ablate run` as verdicts settle, so it "
                              "cannot only plan the study; run it with local --jobs N (N >= 1)")
        self.check()
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        with tracker.execution(self.spec, len(self.runs), str(self.file)) as parent:
            ledger.open(parent, self.spec.report.metric)
            try:
                self._execute(parent, executor, seeds)
            except BaseException:
                executor.stop()  # each worker checkpoints its run and ends; none trains on orphaned
                raise
            if not executor.trains_here:  # planned only: the workers train; `ablate report` once they are done
                return None
            self._send_kept()
        return self._report(self._plan_parent)

    def seed_policy(self) -> FixedSeeds | SequentialSeeds:
        rule = self.spec.sequential
        return SequentialSeeds(rule, self.spec.baseline) if rule else FixedSeeds()

    def _execute(self, parent: str, executor: Executor, seeds: FixedSeeds | SequentialSeeds) -> None:
        """Tune, plan and train (as `executor` trains) until the seed policy adds no seed; only
        plan when the executor's workers train elsewhere."""
        if self.spec.tune:
            from harness.study.tuning import retry_unsettled_trials

            retry_unsettled_trials(self.spec, self.ledger.storage)  # before any worker may claim a trial
        executor.start(self)
        if self.spec.tune:
            self._tune(parent, wait_for_workers=executor.workers_tune)
        self.ledger.release_dead_local_claims()  # an `ablate run` killed here before: its run goes back in the queue
        while True:
            self._plan(parent)
            if not executor.trains_here:
                return
            executor.train(self)
            counts = seeds.next_counts(self._report(self._plan_parent), self._counts()) if seeds.adds_seeds else None
            if counts is None:
                return
            added = [arm for arm, count in counts.items() if count > self._counts()[arm]]
            self.console.print(f"verdicts not settled yet: adding a seed to {', '.join(added)}")
            self._replan(counts)

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
            spec = complete([spec.model_copy(update={"seed": seed})], self.locate, self.inputs)[0]
        run_dir = self.runs_dir / self.name / spec.key()
        if fresh:
            (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
        if world_size() > 1:  # every data-parallel process trains; none opens MLflow runs of its own
            with make_progress(self.console) as progress:
                result = Trainer(spec, run_dir, RunProgress(progress, f"{self.name} seed {spec.seed}",
                                                            spec.train.steps), self.inputs).run()
            return RunOutcome(result.status, result.metrics, reason=result.reason), run_dir / CHECKPOINT_NAME
        tracker = self.tracker
        self._send_kept()
        with tracker.execution(self.spec, 1, str(self.file)) as parent:
            tracker.record_plan(parent, plan_record(self.spec, [spec], str(self.file)))
            with make_progress(self.console) as progress:
                outcome = train_tracked(spec, run_dir, tracker, parent, progress, kind=RUN_KIND, inputs=self.inputs)
        return outcome, run_dir / CHECKPOINT_NAME

    def work(self) -> WorkerOutcome:
        """Be one worker of a study that `run` planned: help tune it (when it tunes), then
        claim and train its queued runs until none is left."""
        self.check()
        tracker, ledger = self.tracker, self.ledger
        self._send_kept()
        if self.spec.tune:
            from harness.study.tuning import tune_all

            with make_progress(self.console) as progress:
                tune_all(self.spec, ledger.storage, tracker, ledger.parent_run_id(), self.runs_dir, progress, self.locate)
        ledger.wait_until_planned()
        if self.spec.tune:
            self._use_best_settings()
        return work(self.possible_runs(), self.spec.report.metric, tracker, ledger, self.runs_dir, self.console,
                    inputs=self.inputs)

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
        self._replan()

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
        # statistics and figures: loaded by what reports, not by workers
        from harness.report import build_report
        from harness.report.collect import NOT_RUN

        tracker = self.tracker
        result = tracker.patiently(lambda: build_report(tracker, self.name, self.reports_dir, plan_id),
                                   "reading the study back")
        self.console.print(f"report: {result.folder / 'report.md'}")
        for row in result.results[~result.results["state"].isin([RunState.FINISHED.value, NOT_RUN])].itertuples():
            self.console.print(f"[yellow]{row.state}:[/] {escape(f'{row.arm} seed {row.seed}: {row.failure_reason}')}")
        return result.summary

    def status(self) -> StudyStatus:
        """Where the study stands: per arm finished, running, queued, failed and diverged runs,
        the runs in flight with their worker and last heartbeat, and an ETA."""
        if self._spec is None:  # by name: the runs the ledger and MLflow know
            return study_status(self.name, self.tracker, self.ledger)
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


def _stores(tracking_uri: str | None = None, storage: str | None = None, runs_dir: str | Path = "runs",
            reports_dir: str | Path = "reports", console: Console | None = None) -> dict:
    """Where a study's records and files go: MLflow, the ledger (default: $ABLATE_STORAGE, else
    sqlite:///optuna.db), checkpoints and reports."""
    return {"tracking_uri": tracking_uri, "storage": storage or os.environ.get("ABLATE_STORAGE") or DEFAULT_STORAGE,
            "runs_dir": Path(runs_dir), "reports_dir": Path(reports_dir), "console": console}
