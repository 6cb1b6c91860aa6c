"""The report's figures: curves per arm (mean and spread over seeds) and final values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.config.run_state import RunState
from harness.files import save_figure  # noqa: E402
from harness.report.escape import figure_label, literal_figure_text, literal_legend  # noqa: E402


@literal_figure_text()
def plot_curves(curves: pd.DataFrame, metric: str, references: dict[str, float], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 5))
    entries = []
    for arm, group in curves.groupby("arm", sort=False):
        by_tokens = group.groupby("tokens")["value"]
        mean, low, high = by_tokens.mean(), by_tokens.min(), by_tokens.max()
        line, = axes.plot(mean.index, mean.values)
        entries.append((line, f"{figure_label(arm)} (mean of {group['seed'].nunique()} seeds)"))
        axes.fill_between(mean.index, low.values, high.values, color=line.get_color(), alpha=0.2)
    for name, value in references.items():
        axes.axhline(value, linestyle="--", color="grey", linewidth=1)
        axes.annotate(name, (axes.get_xlim()[0], value), fontsize=8, color="grey", va="bottom")
    axes.set_xlabel("training tokens")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against tokens (band: min to max over seeds)")
    literal_legend(axes, entries)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


@literal_figure_text()
def plot_final(results: pd.DataFrame, summary: pd.DataFrame, metric: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(max(5.5, 1.6 * len(summary)), 4.5))
    finished = results[results["state"] == RunState.FINISHED.value]
    for position, row in enumerate(summary.itertuples()):
        values = finished.loc[finished["arm"] == row.arm, metric]
        axes.scatter([position] * len(values), values, color="black", s=14, zorder=3)
        if row.seeds > 1:
            axes.errorbar(position + 0.15, row.mean, yerr=[[row.mean - row.ci_low], [row.ci_high - row.mean]],
                          fmt="o", capsize=5, color="tab:blue")
    axes.set_xticks(range(len(summary)), [figure_label(arm) for arm in summary["arm"]], rotation=20)
    axes.set_ylabel(f"final {metric}")
    axes.set_title("final value per seed, mean with 95% CI", fontsize=10)
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


@literal_figure_text()
def plot_scaling(summary: pd.DataFrame, metric: str, path: Path) -> None:
    """Final metric against training FLOPs, one line per variant across the scales (mean with
    its 95% interval)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    entries = []
    for variant, group in summary.groupby("variant", sort=False):
        group = group.sort_values("training_flops")
        errors = [(group["mean"] - group["ci_low"]).fillna(0), (group["ci_high"] - group["mean"]).fillna(0)]
        entries.append((axes.errorbar(group["training_flops"], group["mean"], yerr=errors, marker="o", capsize=4),
                        figure_label(variant)))
    axes.set_xscale("log")
    axes.set_xlabel("training FLOPs per run")
    axes.set_ylabel(f"final {metric}")
    axes.set_title(f"final {metric} against training compute (mean, 95% CI)", fontsize=10)
    literal_legend(axes, entries)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


@literal_figure_text()
def plot_tuning(trials: pd.DataFrame, metric: str, minimize: bool, path: Path) -> None:
    """Best value so far against trial number, per arm (pruned trials count toward the budget)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    entries = []
    for arm, group in trials.groupby("arm", sort=False):
        values = group.set_index("trial")["value"].sort_index()
        best = values.cummin() if minimize else values.cummax()
        line, = axes.step(best.index, best.values, where="post")
        entries.append((line, figure_label(arm)))
        axes.scatter(values.index, values.values, s=10, alpha=0.5)
    axes.set_xlabel("trial")
    axes.set_ylabel(f"best {metric} so far")
    axes.set_title("tuning: best so far (dots: completed trials)", fontsize=10)
    literal_legend(axes, entries)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
