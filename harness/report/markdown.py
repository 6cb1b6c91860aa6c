"""report.md: verdicts first, then the table per arm, the figures, and every run."""

from __future__ import annotations

import math

import pandas as pd

from harness.config.run_state import RunState
from harness.config.records import PlanRecord
from harness.report.collect import NOT_RUN
from harness.report.escape import code_span, markdown_lines, markdown_table
from harness.report.escape import markdown_text as md
from harness.config.study import ForecastSettings, goal_of
from harness.report.forecast import forecast_rule, multiplier_text
from harness.report.metrics import tokenizers_differ
from harness.report.scales import across_scales
from harness.report.settling import SETTLING_RULE, settled_text
from harness.report.stats import RULES

DIGITS = 4


def fmt(value, digits: int = DIGITS) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _count(value) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{int(value):,}"


def render(study: str, collected, summary: pd.DataFrame, references: dict[str, float], shared: dict[str, str],
           data: dict[str, str], tuning: pd.DataFrame | None = None, rule=None,
           secondary: dict[str, pd.DataFrame] | None = None, decisive: pd.DataFrame | None = None,
           forecasts: pd.DataFrame | None = None) -> str:
    plan, results = collected.plan, collected.results
    metric, goal, baseline = plan.metric, plan.goal, plan.baseline
    lines = [f"# {md(study)}", ""]
    if plan.description:
        lines += [markdown_lines(plan.description), ""]
    produced = f"{code_span('ablate run ' + plan.study_file)}, " if plan.study_file else ""
    lines += [f"Metric: final {code_span(metric)} ({'lower' if goal == 'minimize' else 'higher'} is better), "
              f"baseline arm {code_span(baseline)}. Produced by {produced}rebuilt from MLflow alone by "
              f"`ablate report {study}`. It covers the plan of execution `{collected.parent_run_id}`: "
              f"{_arm_count(plan)}, {len(results)} runs.", ""]
    notes = []
    if collected.left_out:
        notes.append(f"{collected.left_out} runs of other plans of this study are left out: their configuration "
                     f"differs from this plan's (`ablate report {study} --plan PARENT_RUN_ID` reports another "
                     "execution).")
    epochs = results["data_epochs"].max()
    if epochs > 1:
        notes.append(f"The runs repeat their data: up to {epochs:,.1f} epochs of the training split "
                     f"(`data_epochs`). A verdict here is about a model that has seen its corpus that often.")
    if len(collected.versions) > 1:
        notes.append("The runs were trained by different versions: " + "; ".join(collected.versions) + ".")
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])

    scales = plan.scales
    lines += ["## Verdicts", ""]
    for scale in scales or [None]:
        rows = summary if scale is None else summary[summary["scale"] == scale.label]
        if scale is not None:
            settings = ", ".join(f"`{path}` = {md(value)}" for path, value in scale.settings.items())
            lines += [f"At {settings}:", ""]
        for row in rows.itertuples():
            arm, base = (row.arm, row.baseline) if scale is None else (row.variant, baseline)
            flag = f" — **{row.flag}**" if row.flag else ""
            if row.arm != row.baseline:
                settled = settled_text(row._asdict())
                lines.append(f"- **{md(arm)} vs {md(base)}**: {row.verdict}{flag}" + (f" ({settled})" if settled else ""))
            elif flag:
                lines.append(f"- **{md(base)}** (baseline){flag}")
        lines.append("")
    lines += [f"- **{md(arm.name)} vs {md(baseline)}**: no verdict — tuning left it without a setting, so it "
              f"trained nothing: {md(arm.reason)}" for arm in plan.untuned] + ([""] if plan.untuned else [])
    family = "within each scale " if scales else ""
    adjustment = (rule.describe(len(summary) - 1) if rule else
                  f"p-values are Holm-adjusted {family}over the arms compared with the baseline.")
    lines += [f"{RULES} {adjustment} {SETTLING_RULE}", ""]
    if scales:
        lines += _scaling_section(summary, forecasts, plan)

    lines += ["## Arms", ""]
    table = pd.DataFrame({
        "arm": summary["arm"],
        "seeds": [f"{s}/{p}" for s, p in zip(summary["seeds"], summary["planned"])],
        "diverged": summary["diverged"],
        "failed": summary["failed"],
        f"{metric} mean ± std": [f"{fmt(m)} ± {fmt(s)}" for m, s in zip(summary["mean"], summary["std"])],
        "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(summary["ci_low"], summary["ci_high"])],
        "Δ vs baseline": [fmt(d) for d in summary["diff"]],
        "Δ 95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(summary["diff_ci_low"], summary["diff_ci_high"])],
        "test": summary["test"],
        "p": [fmt(p) for p in summary["p"]],
        "p (adjusted)": [fmt(p) for p in summary["p_adjusted"]],
        "params (non-emb.)": [_count(p) for p in summary["params_non_embedding"]],
        "FLOPs/token": [_count(f) for f in summary["flops_per_token"]],
        "tokens/s": [_count(t) for t in summary["tokens_per_s"]],
        "wall time (s)": [fmt(w, 1) for w in summary["wall_time_s"]],
    })
    lines += [markdown_table(table, ("arm",)), ""]

    if references:
        scale = ", ".join(f"{name.replace('_loss', '')} {fmt(value)}" for name, value in references.items())
        lines += [f"For scale, reference losses of the validation split from the training split's token "
                  f"counts (nats/token): {scale}.", ""]

    if decisive is not None and len(decisive):
        lines += _decisive_section(decisive, metric, tokenizers_differ(plan))
    if secondary:
        lines += _secondary_section(secondary, metric, scales)

    lines += ["## Figures", "", "![curves](curves.png)", "", "![final values](final_loss.png)", ""]

    if tuning is not None and len(tuning):
        lines += _tuning_section(tuning, metric, goal)

    lines += ["## Settings", ""]
    if data:
        lines += ["Data: " + ", ".join(f"{k} {code_span(v)}" for k, v in data.items()), ""]
    if plan.tuned:
        lines += ["Tuned per arm (see Tuning): " + ", ".join(code_span(path) for path in plan.tuned), ""]
    if shared:
        lines += ["Training settings shared by every arm (not tuned per arm, so a difference can also "
                  "reflect how each arm tolerates them): " + ", ".join(f"{k} = {md(v)}" for k, v in shared.items()), ""]

    lines += ["## Runs", ""]
    runs = results[["arm", "seed", "state", metric, "train_loss", "tokens_per_s", "wall_time_s", "device",
                    "attention_backend", "run_key"]].copy()
    runs[metric] = runs[metric].map(fmt)
    runs["train_loss"] = runs["train_loss"].map(fmt)
    marks = [f" ({caveat})" if caveat else "" for caveat in results["speed_caveat"]]
    runs["tokens_per_s"] = [_count(t) + mark for t, mark in zip(runs["tokens_per_s"], marks)]
    runs["wall_time_s"] = [fmt(w, 1) + mark for w, mark in zip(runs["wall_time_s"], marks)]
    lines += [markdown_table(runs, ("arm", "device", "attention_backend")), ""]
    if any(marks):
        lines += ["A speed marked slowed was measured while the machine slowed the run down (the `slowdown` "
                  "tag), one marked resumed over several attempts: neither is the variant's speed, and the Arms "
                  "table's tokens/s and wall time leave them out. Speed is never a verdict: compare it with "
                  "`ablate bench`.", ""]
    failures = results[~results["state"].isin([RunState.FINISHED.value, NOT_RUN])]
    for row in failures.itertuples():
        lines.append(f"- {md(row.arm)} seed {row.seed} {row.state}: {md(row.failure_reason)}")
    return "\n".join(lines).rstrip() + "\n"


def _decisive_section(decisive: pd.DataFrame, metric: str, incomparable: bool) -> list[str]:
    table = decisive.copy()
    for column in ("spread", "seed_std", "detectable_difference"):
        table[column] = table[column].map(lambda v: fmt(v, 4))
    table["snr"] = table["snr"].map(lambda v: fmt(v, 2))
    table = table.rename(columns={"seed_std": "seed std", "snr": "SNR", "can_decide": "can it decide?",
                                  "detectable_difference": "detectable at 80% power"})
    return ["## Which metric can decide", "",
            f"The verdict is on {code_span(metric)}; every metric the runs log is shown with its signal-to-noise "
            "ratio: the spread of the arms' means (largest minus smallest) over the seed-to-seed standard deviation "
            "(Heineman et al. 2025, \"Signal and Noise\"), and the smallest difference from the baseline these seeds "
            "detect with 80% power (paired t-test, alpha 0.05 over the arms compared). A metric whose arms spread less "
            "than that is too noisy to separate them at this scale."
            + (" val_loss and train_loss are left out: the arms tokenize differently, so their losses per token are "
               "in different units." if incomparable else ""), "",
            markdown_table(table, tuple(c for c in ("metric", "scale", "role", "can it decide?") if c in table)), ""]


def _secondary_section(secondary: dict[str, pd.DataFrame], metric: str, scales) -> list[str]:
    lines = ["## Secondary metrics", "",
             f"Not the verdict (which is on {code_span(metric)}): each metric's differences against the baseline, "
             "paired by seed, with p-values Holm-adjusted within the metric"
             + (" and scale" if scales else "") + ".", ""]
    for name, summary in secondary.items():
        table = pd.DataFrame({
            "arm": summary["arm"],
            "seeds": [f"{s}/{p}" for s, p in zip(summary["seeds"], summary["planned"])],
            "mean": [fmt(m) for m in summary["mean"]],
            "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(summary["ci_low"], summary["ci_high"])],
            "Δ vs baseline": [fmt(d) for d in summary["diff"]],
            "Δ 95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(summary["diff_ci_low"], summary["diff_ci_high"])],
            "p (adjusted)": [fmt(p) for p in summary["p_adjusted"]],
            "secondary verdict": summary["verdict"],
        })
        goal = "lower" if goal_of(name) == "minimize" else "higher"
        lines += [f"### {code_span(name)} ({goal} is better)", "", markdown_table(table, ("arm", "secondary verdict")), ""]
    return lines


def _arm_count(plan: PlanRecord) -> str:
    untuned = len(plan.untuned)
    return f"{len(plan.arms) + untuned} arms" + (f" ({untuned} without a tuned setting)" if untuned else "")


def _scaling_section(summary: pd.DataFrame, forecasts: pd.DataFrame | None, plan: PlanRecord) -> list[str]:
    lines = ["## Across scales", "",
             "Difference against the baseline at each scale (95% interval, and the verdict where there is one), "
             "and how it moves from the smallest scale to the largest:", "",
             markdown_table(across_scales(summary), ("variant",)), "", "![scaling](scaling.png)", ""]
    if forecasts is None or not len(forecasts):
        return lines
    settings = plan.forecast or ForecastSettings()
    target = settings.target_label()
    table = pd.DataFrame({
        "variant": forecasts["variant"],
        **({f"forecast at {target}": [_forecast(row) for row in forecasts.itertuples()],
            "P(better)": ["–" if math.isnan(p) else f"{p:.0%}" for p in forecasts["p_better"]]} if target else {}),
        f"{settings.axis} multiplier at {plan.scales[-1].label}": [
            multiplier_text(row, settings.axis) for row in forecasts.itertuples()],
        "caveat": [note or "" for note in forecasts["note"]],
    })
    lines += [f"### Forecast{' at ' + target if target else ''}", "",
              markdown_table(table, ("variant", "caveat")), "", forecast_rule(settings.axis), ""]
    return lines


def _forecast(row) -> str:
    return "–" if math.isnan(row.difference) else f"{row.difference:+.4f} [{row.low:+.4f}, {row.high:+.4f}]"


def _tuning_section(tuning: pd.DataFrame, metric: str, goal: str) -> list[str]:
    rows = []
    for arm, trials in tuning.groupby("arm", sort=False):
        counts = trials["state"].value_counts()
        finished = trials.dropna(subset=["value"])
        best = finished.loc[finished["value"].idxmin() if goal == "minimize" else finished["value"].idxmax()] \
            if len(finished) else None
        rows.append({"arm": arm, "trials": len(trials), "completed": int(counts.get("finished", 0)),
                     "pruned": int(counts.get("pruned", 0)), "diverged": int(counts.get("diverged", 0)),
                     "failed": int(counts.get("failed", 0)),
                     f"best {metric}": fmt(float(best["value"])) if best is not None else "–",
                     "best setting": best["tuned"] if best is not None else "–",
                     "best trial": int(best["trial"]) if best is not None else "–"})
    return ["## Tuning", "",
            "Every arm was tuned with the same budget; the comparison above runs each arm's best setting "
            "over the study's seeds.", "", markdown_table(pd.DataFrame(rows), ("arm", "best setting")), "",
            "![tuning](tuning.png)", ""]
