"""Which variants help, across every study in a tracking store: one row per variant against
its study's baseline (per scale, for a study with scales), with the setting it was judged in,
the difference and its 95% interval, and the study's own adjusted p-value.

Each study keeps its own baseline, seeds and multiple-comparison family: the leaderboard
collects verdicts, it does not pool studies into new tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.config.records import PlanRecord  # noqa: E402
from harness.config.study import ForecastSettings  # noqa: E402
from harness.errors import AblateError  # noqa: E402
from harness.files import save_figure, write_csv, write_text  # noqa: E402
from harness.redaction import redact  # noqa: E402
from harness.report.escape import (  # noqa: E402
    figure_label,
    literal_figure_text,
    markdown_table,
    markdown_text,
)
from harness.report.forecast import multiplier_text  # noqa: E402
from harness.report.settling import settled_text  # noqa: E402
from harness.tracking.tracker import Tracker  # noqa: E402

COLORS = {"better": "tab:green", "worse": "tab:red", "": "tab:grey"}


def collect_leaderboard(tracker: Tracker) -> tuple[pd.DataFrame, list[str]]:
    """One row per compared variant of every study's newest plan; and the studies left out, with why."""
    from harness.report import judge

    rows, left_out = [], []
    for study in tracker.study_names():
        try:
            judged = judge(tracker, study)
        except AblateError as err:
            left_out.append(f"{study}: {err}")
            continue
        rows += _rows(study, judged.collected.plan, judged.summary, judged.collected.results, judged.forecasts)
    board = pd.DataFrame(rows)
    if len(board):
        board = board.sort_values(["improvement", "study"], ascending=[False, True], na_position="last")
    return board.reset_index(drop=True), left_out


def _rows(study: str, plan: PlanRecord, summary: pd.DataFrame, results: pd.DataFrame,
          forecasts: pd.DataFrame) -> list[dict]:
    configs = {arm.name: arm.config for arm in plan.arms}
    beyond = {row.variant: _beyond(row, plan) for row in forecasts.itertuples()}
    largest = plan.scales[-1].label if plan.scales else ""
    sign = -1 if plan.goal == "minimize" else 1
    tuned = "per arm: " + ", ".join(plan.tuned) if plan.tuned else "no"
    baseline_rows = summary.set_index("arm")
    rows = []
    for row in summary[summary["arm"] != summary["baseline"]].to_dict("records"):
        config = configs[row["arm"]]
        base = baseline_rows.loc[row["baseline"]]
        train, model, data = config["train"], config["model"], config["data"]
        tokens = train["steps"] * train["batch_size"] * train.get("grad_accum", 1) * model["context_length"]
        compared = results[results["arm"].isin([row["arm"], row["baseline"]])]
        epochs = compared["data_epochs"].max() if "data_epochs" in compared else math.nan
        rows.append({
            "study": study, "variant": row.get("variant", row["arm"]),
            "baseline": base.get("variant", row["baseline"]) if "variant" in summary else row["baseline"],
            "scale": row.get("scale", ""), "metric": plan.metric,
            "params (non-emb.)": base["params_non_embedding"], "tokens per run": tokens,
            "data": f"{data['dataset']['name']}, {data['tokenizer']['name']} tokens", "data epochs": epochs,
            "seeds": f"{row['seeds']}/{row['planned']}", "delta": row["diff"], "ci_low": row["diff_ci_low"],
            "ci_high": row["diff_ci_high"], "p": row["p"], "p_holm": row["p_adjusted"], "outcome": row["outcome"],
            "verdict": row["verdict"], "flag": row["flag"], "tuned": tuned,
            "settled": settled_text(row).removeprefix("settled at "),
            "beyond the ladder": beyond.get(row.get("variant"), "") if row.get("scale", "") == largest else "",
            "improvement": sign * row["diff"] if not math.isnan(row["diff"]) else math.nan})
    return rows


def _beyond(forecast, plan: PlanRecord) -> str:
    """A variant's forecast and multiplier in one cell: "at d_model=768: -0.012 [-0.030, +0.006],
    P(better) 91%; 1.15x compute [1.02, 1.31]"."""
    settings = plan.forecast or ForecastSettings()
    parts = []
    if not math.isnan(forecast.difference):
        parts.append(f"at {settings.target_label()}: {forecast.difference:+.4f} [{forecast.low:+.4f}, "
                     f"{forecast.high:+.4f}], P(better) {forecast.p_better:.0%}")
    if not math.isnan(forecast.multiplier):
        parts.append(multiplier_text(forecast, settings.axis))
    return "; ".join(parts + ([forecast.note] if forecast.note else []))


def build_leaderboard(tracker: Tracker | str | None, reports_dir: Path) -> Path:
    """Write leaderboard.md, .csv and .png under `reports_dir` from a tracker (or its tracking
    URI; None: MLflow's default); returns the markdown's path."""
    tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker)
    board, left_out = collect_leaderboard(tracker)
    if board.empty:
        raise AblateError(f"no study in {redact(tracker.uri)} has a finished comparison to rank"
                          + (f" ({'; '.join(left_out)})" if left_out else ""))
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(board.drop(columns=["improvement"]), folder / "leaderboard.csv")
    plot_forest(board, folder / "leaderboard.png")
    write_text(folder / "leaderboard.md", render_leaderboard(board, left_out))
    return folder / "leaderboard.md"


def render_leaderboard(board: pd.DataFrame, left_out: list[str]) -> str:
    params, tokens, studies = board["params (non-emb.)"], board["tokens per run"], board["study"].nunique()
    lines = ["# Variant leaderboard", "",
             f"Every study in the tracking store, its newest plan: {studies} stud{'y' if studies == 1 else 'ies'}, "
             f"{len(board)} variant{'' if len(board) == 1 else 's'} against their study's baseline, best improvement "
             "first. Rebuilt by `ablate leaderboard`.", "",
             f"**Scale.** Models of {_span(params)} non-embedding parameters trained on {_span(tokens)} tokens "
             "per run ("
             + "; ".join(markdown_text(data) for data in sorted(set(board["data"]))) + "). A verdict at this scale need not hold at another: "
             "studies with `scales:` show how a difference moves with size.", "",
             "Δ is variant minus baseline in the study's metric with its 95% interval (paired by seed); p is "
             "Holm-adjusted over the arms of its study (of its scale, in a study with scales). \"better\"/\"worse\" "
             "needs an adjusted p < 0.05; otherwise the interval is the finding. Each study keeps its own "
             "baseline and settings, so rows of different studies are not one experiment.", ""]
    table = pd.DataFrame({
        "variant": board["variant"] + [f" @ {s}" if s else "" for s in board["scale"]],
        "vs": board["baseline"], "study": board["study"],
        "setting": [f"{_millions(p)} params, {_millions(t)} tokens, {d}"
                    + (f"; repeats its data: {e:,.0f} epochs" if e > 1 else "")  # NaN (older runs) is not > 1
                    for p, t, d, e in zip(board["params (non-emb.)"], board["tokens per run"], board["data"],
                                          board["data epochs"])],
        "seeds": board["seeds"],
        "Δ": [_signed(d) for d in board["delta"]],
        "Δ 95% CI": [f"[{_signed(lo)}, {_signed(hi)}]" for lo, hi in zip(board["ci_low"], board["ci_high"])],
        "p (Holm)": ["–" if math.isnan(p) else f"{p:.2g}" if p < 0.001 else f"{p:.4f}" for p in board["p_holm"]],
        "verdict": [_conclusion(v) + (f" ({f})" if f else "") for v, f in zip(board["verdict"], board["flag"])],
        "settled": board["settled"],
        "beyond the ladder": board["beyond the ladder"],
        "tuned": board["tuned"],
    })
    lines += [markdown_table(table, ("variant", "vs", "study", "setting", "verdict", "settled", "beyond the ladder",
                                     "tuned")), "",
              "![forest plot of Δ](leaderboard.png)", ""]
    if left_out:
        lines += ["Left out (nothing to rank yet):", "", *[f"- {markdown_text(line)}" for line in left_out], ""]
    return "\n".join(lines)


@literal_figure_text()
def plot_forest(board: pd.DataFrame, path: Path) -> None:
    """Δ with its 95% interval, one row per variant, best at the top; 0 is no difference."""
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(board) + 1.5))
    for position, row in enumerate(board.itertuples()):
        y = len(board) - 1 - position
        if not math.isnan(row.ci_low):
            axes.plot([row.ci_low, row.ci_high], [y, y], color=COLORS[row.outcome], linewidth=2)
        axes.plot(row.delta, y, "o", color=COLORS[row.outcome])
    labels = [f"{figure_label(r.variant)}{' @ ' + r.scale if r.scale else ''} vs {figure_label(r.baseline)} ({r.study})"
              for r in board.itertuples()]
    axes.set_yticks(range(len(board)), list(reversed(labels)), fontsize=8)
    axes.axvline(0, color="black", linewidth=1)
    metrics = sorted(set(board["metric"]))
    axes.set_xlabel(f"Δ {', '.join(metrics)} vs the study's baseline (95% CI; green better, red worse)")
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def _conclusion(verdict: str) -> str:
    """"better", "worse", "no significant difference", or why there is no test (unstable, ...)."""
    tested = verdict[:1] in "+-" or verdict[:1].isdigit()
    return verdict.rsplit(", ", 1)[-1] if tested else verdict


def _span(values: pd.Series) -> str:
    low, high = _millions(values.min()), _millions(values.max())
    return low if low == high else f"{low}–{high}"


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.4f}"


def _millions(value: float) -> str:
    return f"{value / 1e6:.2g}M" if value >= 1e5 else f"{value / 1e3:.3g}k"
