"""Reports rebuilt from MLflow alone: report.md, results.csv, summary.csv, curves.png,
final_loss.png (and tuning.csv, tuning.png for tuned studies) under reports/<study>/,
also logged on the study's parent run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.report.collect import collect_curves, collect_runs, collect_tuning
from harness.report.markdown import render
from harness.report.plots import plot_curves, plot_final, plot_tuning
from harness.report.stats import summarize
from harness.tracking.tracker import Tracker

SHARED_TRAINING = ["train.steps", "train.batch_size", "train.lr", "train.warmup_steps", "train.schedule",
                   "train.weight_decay", "train.grad_clip"]
DATA_PARAMS = {"data.dataset.name": "dataset", "data_python_version": "python", "data_sha256": "sha256",
               "data.tokenizer.name": "tokenizer", "vocab_size": "vocab"}


@dataclass
class Report:
    folder: Path
    results: pd.DataFrame
    summary: pd.DataFrame


def build_report(tracker: Tracker, study: str, reports_dir: Path, parent_run_id: str | None = None) -> Report:
    results, settings = collect_runs(tracker, study)
    metric = settings.get("metric", "val_loss")
    arms = [a for a in settings.get("arms", "").split(",") if a] or list(dict.fromkeys(results["arm"]))
    baseline = settings.get("baseline") or arms[0]
    for column in (metric, "train_loss", "tokens_per_s", "wall_time_s"):
        if column not in results:
            results[column] = math.nan
    summary = summarize(results, metric, baseline, settings.get("goal", "minimize"),
                        [a for a in arms if a in set(results["arm"])])

    folder = Path(reports_dir) / study
    folder.mkdir(parents=True, exist_ok=True)
    results.to_csv(folder / "results.csv", index=False)
    summary.to_csv(folder / "summary.csv", index=False)
    references = {name: float(results[name].iloc[0]) for name in ("unigram_loss", "bigram_loss")
                  if name in results and not math.isnan(results[name].iloc[0])}
    plot_curves(collect_curves(tracker, results, metric), metric,
                references if metric.endswith("loss") else {}, folder / "curves.png")
    plot_final(results, summary, metric, folder / "final_loss.png")
    first_params = tracker.client.get_run(results["run_id"].iloc[0]).data.params
    tuned = [path for path in settings.get("tuned", "").split(",") if path]
    shared = {k: v for k, v in _shared_settings(tracker, results).items() if f"train.{k}" not in tuned}
    data = {label: first_params[key] for key, label in DATA_PARAMS.items() if key in first_params}
    tuning = collect_tuning(tracker, study, metric)
    files = ["report.md", "results.csv", "summary.csv", "curves.png", "final_loss.png"]
    if len(tuning):
        tuning.to_csv(folder / "tuning.csv", index=False)
        plot_tuning(tuning, metric, settings.get("goal", "minimize") == "minimize", folder / "tuning.png")
        files += ["tuning.csv", "tuning.png"]
    (folder / "report.md").write_text(render(study, settings, results, summary, metric, references, shared, data,
                                             tuning))

    parent = parent_run_id or tracker.latest_parent(tracker.experiment_id(study, create=False))
    if parent:
        for name in files:
            tracker.client.log_artifact(parent, str(folder / name), artifact_path="report")
    return Report(folder, results, summary)


def _shared_settings(tracker: Tracker, results: pd.DataFrame) -> dict[str, str]:
    """Training settings with one value across all runs (those that differ are the arms' business)."""
    values: dict[str, set] = {}
    for run_id in results["run_id"]:
        params = tracker.client.get_run(run_id).data.params
        for key in SHARED_TRAINING:
            values.setdefault(key, set()).add(params.get(key))
    return {key.removeprefix("train."): next(iter(v)) for key, v in values.items() if len(v) == 1 and None not in v}
