"""Per-arm tuning with Optuna: every arm gets the same budget, then the comparison runs
each arm's best setting over the study's seeds.

Each arm has its own Optuna study (`ablate:<study>:tune:<arm>`) in the ledger's storage,
so tuning resumes where it stopped. Trials are MLflow child runs tagged with their trial
number and state; the pruner sees the validation metric at every evaluation.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from harness.errors import AblateError
from harness.progress import Observers, RunProgress
from harness.sampling import training_sample
from harness.study import Arm, StudySpec, TuneSettings, arm_spec
from harness.tracking import TUNE_KIND, Tracker
from harness.training.trainer import Trainer

FINISHED_TRIALS = ("COMPLETE", "PRUNED", "FAIL")


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


class ReportToPruner:
    """Feeds the validation metric to the trial; raises TrialPruned when the pruner says so."""

    def __init__(self, trial, metric: str):
        self.trial = trial
        self.metric = metric

    def on_start(self, info): pass

    def before_checkpoint(self, step, path): pass

    def on_metrics(self, step, metrics):
        if self.metric in metrics:
            self.trial.report(metrics[self.metric], step)
            if self.trial.should_prune():
                raise _optuna().TrialPruned(f"pruned at step {step} ({self.metric} {metrics[self.metric]:.4f})")


def tuning_study_name(study: StudySpec, arm: str) -> str:
    return f"ablate:{study.name}:tune:{arm}"


def tune_arm(study: StudySpec, arm: Arm, storage, tracker: Tracker, parent_run_id: str, runs_dir: Path, progress):
    """Run the arm's remaining trials; returns its Optuna study."""
    optuna = _optuna()
    settings = study.tune
    base = arm_spec(study, arm)
    direction = "minimize" if study.report.goal == "minimize" else "maximize"
    tuning = optuna.create_study(study_name=tuning_study_name(study, arm.name), storage=storage, direction=direction,
                                 sampler=make_sampler(settings),
                                 pruner=make_pruner(settings, base.train.steps, base.train.eval_interval),
                                 load_if_exists=True)
    done = len([t for t in tuning.get_trials(deepcopy=False) if t.state.name in FINISHED_TRIALS])
    experiment_id = tracker.experiment_id(study.name)
    metric = study.report.metric

    def objective(trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = suggest(trial, settings)
        spec = arm_spec(study, arm, "tune", values).model_copy(update={"seed": settings.seed})
        tracked = tracker.open_run(experiment_id, parent_run_id, spec, kind=TUNE_KIND,
                                   name=f"{arm.name} trial {trial.number}",
                                   tags={"trial": str(trial.number), "tuned": json.dumps(values, sort_keys=True)})
        bar = RunProgress(progress, f"tune {arm.name} #{trial.number}", spec.train.steps)
        try:
            trainer = Trainer(spec, runs_dir / study.name / "tune" / f"{arm.name}-{trial.number}",
                              Observers(tracked, bar, ReportToPruner(trial, metric)))
            result = trainer.run(resume=False)
        except optuna.TrialPruned as pruned:
            tracked.end("pruned", "FINISHED", str(pruned))
            raise
        except BaseException as err:
            tracked.end("failed" if not isinstance(err, KeyboardInterrupt) else "interrupted", "FAILED", str(err))
            raise
        finally:
            bar.close()
        tracked.finish(result, trainer.model.summary(), training_sample(trainer))
        if result.status != "finished" or metric not in result.metrics:
            raise optuna.TrialPruned(f"run {result.status}: {result.reason}")
        return result.metrics[metric]

    if done < settings.trials:
        # several workers may tune the same arm: the callback stops everyone at the shared budget
        budget = optuna.study.MaxTrialsCallback(settings.trials, states=None)
        tuning.optimize(objective, n_trials=settings.trials - done, timeout=settings.timeout_s,
                        catch=(AblateError,), callbacks=[budget])
    return tuning


def wait_for_tuning(study: StudySpec, storage, poll_seconds: float = 2.0) -> None:
    """Return once every arm has used its budget and no tuning trial is running anywhere.

    A trial whose worker died is failed by its stale heartbeat and counts toward the budget."""
    optuna = _optuna()
    while True:
        spent, running = [], False
        for arm in study.arm_list():
            try:
                tuning = optuna.load_study(study_name=tuning_study_name(study, arm.name), storage=storage)
            except KeyError:  # no worker has started this arm yet
                spent.append(0)
                continue
            optuna.storages.fail_stale_trials(tuning)
            trials = tuning.get_trials(deepcopy=False)
            spent.append(sum(t.state.name in FINISHED_TRIALS for t in trials))
            running |= any(t.state.name == "RUNNING" for t in trials)
        if not running and min(spent) >= study.tune.trials:
            return
        time.sleep(poll_seconds)


def best_settings(study: StudySpec, storage) -> dict[str, dict[str, Any]]:
    """Each arm's best tuned values (path -> value), read from the storage."""
    optuna = _optuna()
    best = {}
    for arm in study.arm_list():
        try:
            tuning = optuna.load_study(study_name=tuning_study_name(study, arm.name), storage=storage)
            trial = tuning.best_trial
        except (KeyError, ValueError):
            raise AblateError(f"arm '{arm.name}' has no completed tuning trial yet; run `ablate run` to tune it") from None
        best[arm.name] = {path: _decode(trial.params[path], dim.choices) for path, dim in study.tune.space.items()}
    return best


def tune_all(study: StudySpec, storage, tracker: Tracker, parent_run_id: str, runs_dir: Path, progress) -> dict:
    """Tune every arm with the same budget, then return their best settings."""
    tracker.client.set_experiment_tag(tracker.experiment_id(study.name), "ablate.tuned", ",".join(study.tune.space))
    for arm in study.arm_list():
        tune_arm(study, arm, storage, tracker, parent_run_id, runs_dir, progress)
    return best_settings(study, storage)
