"""Per-arm tuning with Optuna: every arm gets the same budget, then the comparison runs
each arm's best setting over the study's seeds.

Each arm has its own Optuna study (`ablate:<study>:tune:<arm>`) in the ledger's storage,
so tuning resumes where it stopped. Trials are MLflow child runs tagged with their trial
number and state, trained through the same lifecycle as comparison runs: a trial
interrupted, killed or failed is tried again with the same setting by the next `ablate run`
and continues from its checkpoint in the same MLflow run. The pruner sees the validation
metric at every evaluation.
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path
from typing import Any

from harness.config.run_state import RunState
from harness.config.study import Arm, StudySpec, TuneSettings, arm_spec
from harness.errors import AblateError
from harness.study.ledger import release_dead_local_claims, worker_name
from harness.study.lifecycle import RunPruned, train_tracked
from harness.study.plan import Tuned, complete
from harness.tracking.tracker import TUNE_KIND, Tracker
from harness.training.observer import Observer

# a failed trial is tried again this many times, like one whose worker died
MAX_RETRIES = 3


def _optuna():
    import optuna

    return optuna


def make_sampler(settings: TuneSettings):
    optuna = _optuna()
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(
            {path: [_encode(c) for c in dim.choices] for path, dim in settings.space.items()}, seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=max(2, settings.trials // 3))


def make_pruner(settings: TuneSettings, steps: int, eval_interval: int):
    optuna = _optuna()
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_interval, max_resource=steps)
    # curves of different learning rates cross early on; judge them after a third of training
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(eval_interval, steps // 3))


def _encode(choice: Any):
    # Optuna's choices must be plain values: mappings (a variant with options) travel as JSON
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice, sort_keys=True)


def _decode(value: Any, choices: list[Any] | None):
    if choices is not None and isinstance(value, str) and value not in choices:
        return json.loads(value)
    return value


def suggest(trial, settings: TuneSettings) -> dict[str, Any]:
    values = {}
    for path, dim in settings.space.items():
        if dim.type == "float":
            values[path] = trial.suggest_float(path, dim.low, dim.high, log=dim.log)
        elif dim.type == "int":
            values[path] = trial.suggest_int(path, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[path] = _decode(trial.suggest_categorical(path, [_encode(c) for c in dim.choices]), dim.choices)
    return values


class ReportToPruner(Observer):
    """Feeds the validation metric to the trial; stops the run when the pruner says so."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric

    def on_metrics(self, step, metrics):
        if self.metric in metrics:
            self.trial.report(metrics[self.metric], step)
            if self.trial.should_prune():
                raise RunPruned(f"pruned at step {step} ({self.metric} {metrics[self.metric]:.4f})")


class TrialFailed(Exception):
    """A trial's run failed (out of memory, an unusable checkpoint): the trial fails, and the
    next `ablate run` tries its setting again."""


def _retried(trials) -> set[int]:
    """Numbers of the trials that a later trial tries again."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def spent(trials) -> int:
    """Trials that count toward an arm's budget: every ended trial, except those tried again."""
    retried = _retried(trials)
    return sum(t.state.name in ("COMPLETE", "PRUNED", "FAIL") and t.number not in retried for t in trials)


def retry_unsettled_trials(study: StudySpec, storage) -> int:
    """Queue again, with the same setting, every trial of this study's tuning whose run did not
    settle (interrupted, killed or failed), at most MAX_RETRIES times each: the copy continues
    the same run. Call it from one process, before workers start. Returns how many."""
    optuna = _optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    queued = 0
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    for arm in study.arm_list():
        try:
            tuning = optuna.load_study(study_name=tuning_study_name(study, arm.name), storage=storage)
        except KeyError:  # not tuned yet
            continue
        release_dead_local_claims(tuning)
        trials = tuning.get_trials(deepcopy=False)
        retried = _retried(trials)
        for trial in trials:
            if trial.state.name == "FAIL" and trial.number not in retried:
                before = len(tuning.get_trials(deepcopy=False))
                retry(tuning, trial)
                queued += len(tuning.get_trials(deepcopy=False)) > before
    return queued


def tuning_study_name(study: StudySpec, arm: str) -> str:
    return f"ablate:{study.name}:tune:{arm}"


def tune_arm(study: StudySpec, arm: Arm, storage, tracker: Tracker, parent_run_id: str, runs_dir: Path, progress,
             locate=None):
    """Run the arm's remaining trials; returns its Optuna study. `locate` finds the checkpoint of
    another study's run that the arm starts from (harness.study.staging)."""
    optuna = _optuna()
    settings = study.tune
    base = arm_spec(study, arm)
    direction = "minimize" if study.report.goal == "minimize" else "maximize"
    tuning = optuna.create_study(study_name=tuning_study_name(study, arm.name), storage=storage, direction=direction,
                                 sampler=make_sampler(settings),
                                 pruner=make_pruner(settings, base.train.steps, base.train.eval_interval),
                                 load_if_exists=True)
    metric = study.report.metric

    def objective(trial):
        trial.set_user_attr("worker", worker_name())
        # a retried trial carries the user attributes of the one it tries again
        origin = trial.user_attrs.get("origin", trial.number)
        trial.set_user_attr("origin", origin)
        values = suggest(trial, settings)
        spec = arm_spec(study, arm, "tune", values).model_copy(update={"seed": settings.seed})
        [spec] = complete([spec], locate)
        try:
            outcome = train_tracked(
                spec, runs_dir / study.name / "tune" / f"{spec.key()}-{origin}", tracker, parent_run_id, progress,
                kind=TUNE_KIND, identity={"run_key": spec.key(), "trial": str(origin)},
                name=f"{arm.name} trial {origin}", tags={"tuned": json.dumps(values, sort_keys=True)},
                observers=(ReportToPruner(trial, metric),))
        except BaseException:
            trial.set_user_attr("state", RunState.INTERRUPTED.value)
            raise
        trial.set_user_attr("state", outcome.state.value)
        if outcome.state == RunState.FAILED:
            raise TrialFailed(outcome.reason)
        if outcome.state != RunState.FINISHED or metric not in outcome.metrics:
            raise optuna.TrialPruned(f"run {outcome.state.value}: {outcome.reason}")
        return outcome.metrics[metric]

    def stop_at_budget(tuning, trial):
        # several workers may tune the same arm: this stops every one of them at the shared budget
        if spent(tuning.get_trials(deepcopy=False)) >= settings.trials:
            tuning.stop()

    done = spent(tuning.get_trials(deepcopy=False))
    if done < settings.trials:
        tuning.optimize(objective, n_trials=settings.trials - done, timeout=settings.timeout_s,
                        catch=(TrialFailed,), callbacks=[stop_at_budget])
    return tuning


def wait_for_tuning(study: StudySpec, storage, poll_seconds: float = 2.0) -> None:
    """Return once no tuning trial is running anywhere and every arm has spent its budget or
    has a trial queued again after its worker died (which the caller then tunes itself)."""
    optuna = _optuna()
    while True:
        ready, running = True, False
        for arm in study.arm_list():
            try:
                tuning = optuna.load_study(study_name=tuning_study_name(study, arm.name), storage=storage)
            except KeyError:  # no worker has started this arm yet
                ready = False
                continue
            optuna.storages.fail_stale_trials(tuning)
            trials = tuning.get_trials(deepcopy=False)
            running |= any(t.state.name == "RUNNING" for t in trials)
            ready &= spent(trials) >= study.tune.trials or any(t.state.name == "WAITING" for t in trials)
        if ready and not running:
            return
        time.sleep(poll_seconds)


def best_settings(study: StudySpec, storage) -> Tuned:
    """Each arm's best tuned values (path -> value), read from the storage, and the arms whose
    spent budget left no setting (every trial diverged, failed or was pruned), which the
    comparison goes on without.

    Raises AblateError when an arm has budget left and no result yet, or when the baseline
    has no setting (then no arm can be compared)."""
    optuna = _optuna()
    best, dead = {}, {}
    for arm in study.arm_list():
        try:
            tuning = optuna.load_study(study_name=tuning_study_name(study, arm.name), storage=storage)
        except KeyError:
            raise AblateError(f"arm '{arm.name}' has not been tuned yet; run `ablate run` to tune it") from None
        trials = tuning.get_trials(deepcopy=False)
        try:
            trial = tuning.best_trial
        except ValueError:
            if spent(trials) < study.tune.trials:
                raise AblateError(f"arm '{arm.name}' has no completed tuning trial yet; run `ablate run` to tune "
                                  "it") from None
            dead[arm.name] = _dead_end(arm, trials, study.tune)
            continue
        best[arm.name] = {path: _decode(trial.params[path], dim.choices) for path, dim in study.tune.space.items()}
    if study.baseline in dead:
        raise AblateError(f"{dead[study.baseline]} It is the baseline, so no arm can be compared until it has one")
    return Tuned(best, dead)


def _dead_end(arm: Arm, trials, settings: TuneSettings) -> str:
    """Why an arm whose budget is spent has no tuned setting, and the way out: what diverged
    may be the arm's own settings or the range searched, and more trials help only where the
    space has settings left to try."""
    states = collections.Counter(t.user_attrs.get("state", t.state.name.lower()) for t in trials
                                 if t.state.name in ("PRUNED", "FAIL"))
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    own = ", ".join(f"{path}={value}" for path, value in arm.set.items())
    suspects = f"the arm's own settings ({own}) or the values tune.space searches" if own else \
        "the values tune.space searches (a lower train.lr range, warmup)"
    choices = [len(dim.choices) for dim in settings.space.values()] if \
        all(dim.type == "categorical" for dim in settings.space.values()) else []
    settings_left = not choices or math.prod(choices) > settings.trials
    more = f" and raise tune.trials above {settings.trials}" if settings_left else \
        f" (all {math.prod(choices)} settings tune.space allows were tried, so more trials cannot help)"
    return (f"arm '{arm.name}': all {settings.trials} tuning trials ended without a result ({counts}), so it has no "
            f"setting to compare. What diverges may be {suspects}: make them stabler{more}, and `ablate run` tunes "
            "it again; or leave the arm out.")


def tune_all(study: StudySpec, storage, tracker: Tracker, parent_run_id: str, runs_dir: Path, progress,
             locate=None) -> Tuned:
    """Tune every arm with the same budget, then return their best settings."""
    tracker.set_experiment_tag(tracker.experiment_id(study.name), "ablate.tuned", ",".join(study.tune.space))
    for arm in study.arm_list():
        tune_arm(study, arm, storage, tracker, parent_run_id, runs_dir, progress, locate)
    return best_settings(study, storage)
