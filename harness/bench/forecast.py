"""`ablate bench forecast`: how often a ladder study's forecasts are right (Magnusson et al. 2025).

Each scale with at least three smaller ones is held out in turn; every comparison (every pair
of arms, the earlier one as the reference) is forecast there from the smaller scales alone
(harness.report.forecast) and checked against the difference the held-out scale measured:

- coverage: the share of 95% prediction intervals that hold the measured difference;
- decision accuracy: the share whose forecast sign matches the measured sign, against two
  naive rules: the sign at the smallest scale, and the sign at the largest fitted scale;
- Brier score of P(better) against whether the variant measured better (0.25: always 50%).
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from harness.config.records import PlanRecord
from harness.config.study import ForecastSettings
from harness.errors import AblateError
from harness.files import study_folder, write_csv, write_text
from harness.report.collect import collect_runs
from harness.report.escape import markdown_table, markdown_text
from harness.report.forecast import MIN_SCALES, final_values, forecast_pair

MIN_CASES = 30  # comparisons x held-out scales before the check says which rule to read


def held_out_cases(results: pd.DataFrame, plan: PlanRecord, vocab_size: int) -> pd.DataFrame:
    """One row per comparison x held-out scale: the forecast from the smaller scales, the
    measured difference there, and the two naive rules' differences."""
    axis = (plan.forecast or ForecastSettings()).axis
    finals = final_values(results, plan, axis, vocab_size)
    variants = list(dict.fromkeys(arm.variant for arm in plan.arms))
    sign = 1.0 if plan.goal == "minimize" else -1.0
    rows = []
    for held in range(MIN_SCALES, len(plan.scales)):
        fitted, measured = finals[finals["scale"] < held], finals[finals["scale"] == held]
        for reference, variant in combinations(variants, 2):
            observed = _paired_difference(measured, variant, reference)
            if math.isnan(observed):
                continue
            target = {name: float(measured.loc[measured["variant"] == name, "x"].iloc[0]) for name in (reference, variant)}
            forecast = forecast_pair(fitted, variant, reference, plan.goal, target, plan.scales[held].label)
            rows.append({"variant": variant, "reference": reference, "held_out": plan.scales[held].label,
                         "measured": observed, "forecast": forecast.difference, "low": forecast.low,
                         "high": forecast.high, "p_better": forecast.p_better,
                         "smallest_scale": _paired_difference(finals[finals["scale"] == 0], variant, reference),
                         "largest_fitted": _paired_difference(finals[finals["scale"] == held - 1], variant, reference),
                         "measured_better": sign * observed < 0, "note": forecast.note})
    return pd.DataFrame(rows)


def _paired_difference(finals: pd.DataFrame, variant: str, reference: str) -> float:
    """Mean over the seeds both arms finished of variant minus reference (NaN if none)."""
    table = finals[finals["variant"].isin([variant, reference])].pivot_table(index="seed", columns="variant",
                                                                            values="value").dropna()
    if variant not in table or reference not in table or table.empty:
        return math.nan
    return float((table[variant] - table[reference]).mean())


def score(cases: pd.DataFrame) -> dict[str, float]:
    """Coverage, decision accuracies (forecast, the naive rules) and the Brier score."""
    usable = cases.dropna(subset=["forecast"])
    same_sign = lambda column: float((np.sign(usable[column]) == np.sign(usable["measured"])).mean())  # noqa: E731
    return {"cases": len(usable), "coverage": float(((usable["low"] <= usable["measured"])
                                                     & (usable["measured"] <= usable["high"])).mean()),
            "forecast": same_sign("forecast"), "smallest_scale": same_sign("smallest_scale"),
            "largest_fitted": same_sign("largest_fitted"),
            "brier": float(((usable["p_better"] - usable["measured_better"].astype(float)) ** 2).mean())}


def render(study: str, scores: dict[str, float], cases: pd.DataFrame) -> str:
    """The benchmark's markdown: the figures against their targets, what to trust, every case."""
    naive = max(scores["smallest_scale"], scores["largest_fitted"])
    naive_name = "the sign at the smallest scale" if scores["smallest_scale"] >= scores["largest_fitted"] else \
        "the sign at the largest fitted scale"
    table = pd.DataFrame([
        {"figure": "cases (comparison x held-out scale)", "value": f"{scores['cases']}",
         "target": f"at least {MIN_CASES}"},
        {"figure": "coverage of the 95% intervals", "value": f"{scores['coverage']:.1%}", "target": "at least 90%"},
        {"figure": "decision accuracy: forecast", "value": f"{scores['forecast']:.1%}",
         "target": "at least the better naive rule's"},
        {"figure": "decision accuracy: sign at the smallest scale", "value": f"{scores['smallest_scale']:.1%}",
         "target": ""},
        {"figure": "decision accuracy: sign at the largest fitted scale", "value": f"{scores['largest_fitted']:.1%}",
         "target": ""},
        {"figure": "Brier score of P(better)", "value": f"{scores['brier']:.3f}",
         "target": "at most 0.15 (always 50%: 0.25)"},
    ])
    if scores["cases"] < MIN_CASES:
        verdict = (f"Too few cases ({scores['cases']}) to say whether the forecasts beat the naive rules (at least "
                   f"{MIN_CASES}: more arms, or more scales above the third); the figures are for information.")
    elif scores["forecast"] >= naive:
        verdict = (f"The forecast's signs were right at least as often as {naive_name}'s ({scores['forecast']:.1%} "
                   f"against {naive:.1%}): read the forecasts.")
    else:
        verdict = (f"The forecast does not beat the naive rules here: {naive_name} was right {naive:.1%} of the time, "
                   f"the forecast {scores['forecast']:.1%}. Read {naive_name} instead.")
    shown = cases.assign(**{c: cases[c].map(lambda v: f"{v:+.4f}") for c in
                            ("measured", "forecast", "low", "high", "smallest_scale", "largest_fitted")},
                         p_better=cases["p_better"].map(lambda v: f"{v:.2f}"))
    return "\n".join([f"# Forecast check of study {markdown_text(study)}", "",
                      "Each scale with at least three smaller ones held out in turn; every pair of arms forecast "
                      "there from the smaller scales alone (harness.report.forecast) and checked against what it "
                      "measured (Magnusson et al. 2025).", "",
                      markdown_table(table, ("figure", "target")), "", verdict, "", "## Cases", "",
                      markdown_table(shown.drop(columns=["measured_better"]), ("variant", "reference", "held_out",
                                                                                "note")), ""])


def forecast_check(tracker, study: str, reports_dir: Path) -> str:
    """The benchmark on the study's newest plan in `tracker`: its markdown, also written to
    reports/<study>/forecast_check.md (and forecast_cases.csv). Raises AblateError for a study
    without enough scales."""
    collected = collect_runs(tracker, study)
    plan, results = collected.plan, collected.results
    if len(plan.scales) <= MIN_SCALES:
        raise AblateError(f"study '{study}' has {len(plan.scales)} scales; holding one out and forecasting it needs "
                          f"at least {MIN_SCALES + 1} (scales: in the study file)")
    vocab = results["vocab_size"].dropna()
    cases = held_out_cases(results, plan, int(vocab.iloc[0]))
    if cases.empty:
        raise AblateError(f"study '{study}' has no comparison finished at a held-out scale yet; run it first")
    if cases["forecast"].isna().all():
        raise AblateError(f"no held-out scale of study '{study}' could be forecast: {cases['note'].iloc[0]}")
    text = render(study, score(cases), cases)
    folder = study_folder(reports_dir, study)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "forecast_check.md", text)
    write_csv(cases, folder / "forecast_cases.csv")
    return text
