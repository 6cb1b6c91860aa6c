"""Reports rebuilt from MLflow alone: report.md, results.csv, summary.csv, secondary.csv,
signal_noise.csv, curves.png, final_loss.png (and tuning.csv, tuning.png for tuned studies,
scaling.png and forecast.csv for one with scales) under reports/<study>/, also logged on the study's parent run.

    collect.py      one execution read back: its plan, a row per planned run, curves, trials
    stats.py        per-arm statistics and verdicts against the baseline
    metrics.py      the other metrics the runs log (secondary), and which metric can decide
    sequential.py   the alpha-spending rule of a study that adds seeds as verdicts settle
    scales.py       a verdict per scale, and how a difference moves with scale
    forecast.py     power-law forecasts beyond the scales run, and compute multipliers
    settling.py     where during training each verdict stopped changing
    arm_runs.py     each arm's mean curve, band and verdict as an MLflow run
    markdown.py     report.md
    plots.py        the figures
    leaderboard.py  every study in a store ranked: reports/leaderboard.md, .csv, .png
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.config.run_state import RunState
from harness.config.records import PlanRecord
from harness.files import study_folder, write_csv, write_text
from harness.notices import warn
from harness.redaction import error_line
from harness.report.arm_runs import log_arm_runs
from harness.report.collect import Collected, collect_curves, collect_runs, collect_tuning
from harness.report.markdown import render
from harness.report.forecast import FORECAST_COLUMNS, forecast_study
from harness.report.metrics import secondary_summaries, signal_and_noise
from harness.report.plots import plot_curves, plot_final, plot_scaling, plot_tuning
from harness.report.scales import summarize_plan
from harness.report.sequential import SequentialRule
from harness.report.settling import SETTLING_COLUMNS, settling_points
from harness.tracking.tracker import Tracker

SHARED_TRAINING = ["steps", "batch_size", "lr", "warmup_steps", "schedule", "weight_decay", "grad_clip"]
DATA_PARAMS = {"data.dataset.name": "dataset", "data_python_version": "python", "data_sha256": "sha256",
               "data.tokenizer.name": "tokenizer", "vocab_size": "vocab"}


@dataclass
class Report:
    folder: Path
    results: pd.DataFrame
    summary: pd.DataFrame


@dataclass
class Judged:
    """One execution of a study read back from MLflow, and its verdicts."""

    collected: Collected
    summary: pd.DataFrame  # one row per arm, with where its verdict settled (settling.py)
    references: dict[str, float]  # unigram_loss, bigram_loss of the validation split
    rule: SequentialRule | None  # how p-values were adjusted, when seeds were added sequentially
    curves: pd.DataFrame  # every run's history of the metric (collect_curves)
    forecasts: pd.DataFrame  # with scales: one row per variant (forecast.py), else empty


def judge(tracker: Tracker, study: str, plan_id: str | None = None) -> Judged:
    """The verdicts of the study's newest plan (or of the execution `plan_id`), from MLflow:
    where each settled during training, and with scales, what they forecast beyond them."""
    collected = collect_runs(tracker, study, plan_id)
    plan, results = collected.plan, collected.results
    metric = plan.metric
    for column in (metric, "train_loss", "tokens_per_s", "wall_time_s"):
        if column not in results:
            results[column] = math.nan
    finished = results[results["state"] == RunState.FINISHED.value]
    references = {name: float(finished[name].iloc[0]) for name in ("unigram_loss", "bigram_loss")
                  if metric.endswith("loss") and name in finished and not math.isnan(finished[name].iloc[0])}
    rule = SequentialRule(plan.sequential.min, plan.sequential.max) if plan.sequential else None
    summary = summarize_plan(results, plan, references, rule)
    curves = collect_curves(tracker, results, metric)
    settled = _derived("where the verdicts settled", lambda: settling_points(
        curves.merge(finished[["arm", "seed"]]), plan, rule), SETTLING_COLUMNS)
    summary = summary.merge(settled, on="arm", how="left")
    vocab = finished["vocab_size"].dropna() if "vocab_size" in finished else pd.Series(dtype=float)
    forecasts = _derived("the forecasts across scales", lambda: forecast_study(results, plan, int(vocab.iloc[0]))
                         if plan.scales and len(vocab) else None, FORECAST_COLUMNS)
    return Judged(collected, summary, references, rule, curves, forecasts)


def build_report(tracker: Tracker, study: str, reports_dir: Path, plan_id: str | None = None) -> Report:
    """Rebuild the report of the study's newest plan (or of the execution `plan_id`) from MLflow."""
    judged = judge(tracker, study, plan_id)
    collected, summary, references, rule = judged.collected, judged.summary, judged.references, judged.rule
    curves = judged.curves
    plan, results = collected.plan, collected.results
    metric, goal = plan.metric, plan.goal
    finished = results[results["state"] == RunState.FINISHED.value]

    folder = study_folder(reports_dir, study)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(results, folder / "results.csv")
    write_csv(summary, folder / "summary.csv")
    if len(judged.forecasts):
        write_csv(judged.forecasts, folder / "forecast.csv")
    else:  # one left by an earlier report would contradict this one
        (folder / "forecast.csv").unlink(missing_ok=True)
    secondary, decisive = {}, pd.DataFrame()

    def metrics_tables():
        nonlocal secondary, decisive
        secondary = secondary_summaries(results, plan)
        decisive = signal_and_noise(results, {metric: summary, **secondary}, plan)
        write_csv(pd.concat([frame.assign(metric=name) for name, frame in secondary.items()], ignore_index=True)
                  if secondary else pd.DataFrame(columns=["metric"]), folder / "secondary.csv")
        write_csv(decisive, folder / "signal_noise.csv")

    files_of_metrics = ["secondary.csv", "signal_noise.csv"] if _reported("the secondary metrics", metrics_tables) else []
    files = ["report.md", "results.csv", "summary.csv", *files_of_metrics]
    files += ["forecast.csv"] if len(judged.forecasts) else []
    files += _drawn(folder / "curves.png", lambda path: plot_curves(curves, metric, references, path))
    finished_curves = curves.merge(finished[["arm", "seed"]])  # a diverged seed has no place in a mean
    _reported("the arms' runs in MLflow", lambda: log_arm_runs(
        tracker, tracker.experiment_id(study, create=False), collected.parent_run_id, summary, finished_curves, metric))
    files += _drawn(folder / "final_loss.png", lambda path: plot_final(results, summary, metric, path))
    data = _data_settings(tracker, finished)
    tuning = collect_tuning(tracker, study, metric)
    if plan.scales:
        files += _drawn(folder / "scaling.png", lambda path: plot_scaling(summary, metric, path))
    if len(tuning):
        write_csv(tuning, folder / "tuning.csv")
        files += ["tuning.csv", *_drawn(folder / "tuning.png",
                                        lambda path: plot_tuning(tuning, metric, goal == "minimize", path))]
    write_text(folder / "report.md", render(study, collected, summary, references, _shared_settings(plan), data,
                                            tuning, rule, secondary, decisive, judged.forecasts))
    tracker.attach_files(collected.parent_run_id, [folder / name for name in files], "report")
    return Report(folder, results, summary)


def _derived(what: str, derive, columns: list[str]) -> pd.DataFrame:
    """derive() (a table the verdicts carry), or an empty table of `columns` when there is none
    or it failed (with a warning): the verdicts stand without it."""
    derived = None

    def make():
        nonlocal derived
        derived = derive()

    _reported(what, make)
    return derived if derived is not None else pd.DataFrame(columns=columns)


def _reported(what: str, report) -> bool:
    """report() (a figure, a derived record): a failure there is a warning, never the end of
    a study whose runs are trained and tracked."""
    try:
        report()
        return True
    except Exception as err:
        warn(f"{what} could not be made ({type(err).__name__}: {error_line(err, 200)}); the rest of the report is "
             "written")
        return False


def _drawn(path: Path, draw) -> list[str]:
    """[the figure's file name] once draw(path) has drawn it; [] (and a warning) when it failed."""
    return [path.name] if _reported(str(path), lambda: draw(path)) else []


def _data_settings(tracker: Tracker, finished: pd.DataFrame) -> dict[str, str]:
    """The data every arm trained on (dataset, sha256, tokenizer, vocabulary), from one finished
    run per arm; a setting that differs between arms says so."""
    per_arm = [tracker.params(run_id) for run_id in finished.drop_duplicates("arm")["run_id"]]
    data = {}
    for key, label in DATA_PARAMS.items():
        values = {params[key] for params in per_arm if key in params}
        if values:
            data[label] = values.pop() if len(values) == 1 else "differs by arm"
    return data


def _shared_settings(plan: PlanRecord) -> dict[str, str]:
    """Training settings with one value in every arm and not tuned (those that differ are the arms' business)."""
    shared = {}
    configs = plan.arm_configs()
    for key in SHARED_TRAINING:
        values = {json.dumps(config["train"].get(key)) for config in configs}
        if len(values) == 1 and f"train.{key}" not in plan.tuned:
            shared[key] = str(configs[0]["train"].get(key))
    return shared
