"""What a verdict found on a ladder of scales says at a scale the study did not run.

Each arm's final metric is fitted against training compute C (or non-embedding parameters N,
or training tokens D: `report.forecast.axis`) with a saturating power law

    L(x) = E + A * (x / x0) ** -alpha          (Kaplan et al. 2020; Hoffmann et al. 2022)

fitted jointly for a variant and its baseline with one exponent `alpha` (the ladder's, as OLMo's
per-family ladders fit it, Bhagia et al. 2024): two arms on a few scales cannot pin down two
exponents, and one exponent makes a difference in A a constant compute multiplier.

- **Forecast**: the variant's difference from the baseline at the study's target, with a 95%
  prediction interval of the difference a study with these seeds would measure there. Its
  spread adds three things: the fit's uncertainty (refitted on a parametric bootstrap of every
  scale's means from the seeds' pooled noise, widened by the misfit where the means stray from
  the curves by more than that noise), the noise of a mean of that many seeds at the target,
  and the forecast's move beyond the largest difference measured, counted as uncertain as it
  is large (a ladder's trend may bend). The probability that the variant is better there is
  read from the same distribution (Student's t, the seeds' pooled degrees of freedom).
- **Compute multiplier**: at the largest scale, the factor of the baseline's compute that its
  fitted curve needs to reach the variant's loss ("1.15x compute"), with a bootstrap interval.
- **Warnings**: a fit whose residuals exceed the seed noise (reduced chi-squared > 4), and a
  target further beyond the largest scale than the ladder spans (in log units).

DataDecide (Magnusson et al. 2025) found that the ranking at a single small scale predicts the
ranking at 1B about 80% of the time and that no scaling-law method beat it per unit of
compute: `ablate bench forecast` measures, on a ladder study, whether these forecasts beat the
naive rules, and the report says which to trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from harness.config.records import PlanRecord
from harness.config.run_state import RunState
from harness.config.study import ForecastSettings

BOOTSTRAP_DRAWS = 200
MIN_SCALES = 3  # a saturating power law has three parameters per curve
MIN_SEEDS = 2
POOR_FIT = 4.0  # reduced chi-squared of the fit above which it is called poor
ALPHA_BOUNDS = (0.01, 3.0)
MAX_EVALUATIONS = 200  # per least-squares fit: a fit still moving then is in a flat valley (E against A)
AXES = {"compute": "training FLOPs", "params": "non-embedding parameters", "tokens": "training tokens"}


@dataclass(frozen=True)
class PowerLaw:
    """L(x) = E + A * (x / x0) ** -alpha, decreasing toward E as x grows."""

    E: float
    A: float
    alpha: float
    x0: float

    def __call__(self, x):
        return self.E + self.A * (np.asarray(x, float) / self.x0) ** -self.alpha

    def inverse(self, loss: float) -> float:
        """The x at which the curve reaches `loss`: inf at or below its floor E."""
        if loss <= self.E:
            return math.inf
        return self.x0 * ((loss - self.E) / self.A) ** (-1 / self.alpha)


def fit_pair(x_base: np.ndarray, y_base: np.ndarray, x_variant: np.ndarray, y_variant: np.ndarray,
             start: np.ndarray | None = None) -> tuple[PowerLaw, PowerLaw, float, np.ndarray]:
    """Power laws for a baseline and a variant (arrays of one value per scale, `y` lower is
    better) with one shared exponent, by least squares; the sum of squared residuals; and the
    fitted parameters (a `start` for a refit on resampled data). x0 is the smallest x, so A is
    the excess over E there."""
    x0 = float(min(x_base.min(), x_variant.min()))
    lb, lv = np.log(x_base / x0), np.log(x_variant / x0)
    floor = float(min(y_base.min(), y_variant.min()))
    spread = float(max(np.ptp(y_base), np.ptp(y_variant), 1e-6))
    low = np.array([-np.inf, math.log(spread) - 30, -np.inf, math.log(spread) - 30, ALPHA_BOUNDS[0]])
    high = np.array([floor, math.log(spread) + 30, floor, math.log(spread) + 30, ALPHA_BOUNDS[1]])

    def residuals(theta):
        e_b, log_a_b, e_v, log_a_v, alpha = theta
        return np.concatenate([e_b + np.exp(log_a_b - alpha * lb) - y_base,
                               e_v + np.exp(log_a_v - alpha * lv) - y_variant])

    def jacobian(theta):
        _, log_a_b, _, log_a_v, alpha = theta
        excess_b, excess_v = np.exp(log_a_b - alpha * lb), np.exp(log_a_v - alpha * lv)
        zeros_b, zeros_v = np.zeros_like(lb), np.zeros_like(lv)
        return np.block([[np.ones_like(lb)[:, None], excess_b[:, None], zeros_b[:, None], zeros_b[:, None],
                          (-lb * excess_b)[:, None]],
                         [zeros_v[:, None], zeros_v[:, None], np.ones_like(lv)[:, None], excess_v[:, None],
                          (-lv * excess_v)[:, None]]])

    # a few starts (the problem is not convex in alpha), or the full data's fit for a resample
    starts = [start] if start is not None else [
        [floor - spread, math.log(2 * spread), floor - spread, math.log(2 * spread), alpha] for alpha in (0.1, 0.5, 1.5)]
    best = None
    for guess in starts:
        found = optimize.least_squares(residuals, np.clip(guess, low + 1e-9, high - 1e-9), jac=jacobian,
                                       bounds=(low, high), max_nfev=MAX_EVALUATIONS)
        if best is None or found.cost < best.cost:
            best = found
    e_b, log_a_b, e_v, log_a_v, alpha = best.x
    return (PowerLaw(e_b, math.exp(log_a_b), alpha, x0), PowerLaw(e_v, math.exp(log_a_v), alpha, x0),
            float(2 * best.cost), best.x)


@dataclass
class Forecast:
    """A variant's difference from its baseline beyond the ladder, in the metric's units
    (variant minus baseline, as the verdicts)."""

    variant: str
    target: str  # what the forecast is at ("d_model=768"), or "" without a target
    difference: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_better: float = math.nan
    multiplier: float = math.nan  # baseline compute (or axis) factor at the largest scale
    multiplier_low: float = math.nan
    multiplier_high: float = math.nan
    note: str = ""  # why there is no forecast, or what to beware of


def forecast_pair(finals: pd.DataFrame, variant: str, baseline: str, goal: str,
                  target: dict[str, float] | None = None, target_label: str = "",
                  draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> Forecast:
    """The Forecast of `variant` against `baseline` from `finals` (rows: variant, scale (its
    position on the ladder, smallest first), seed, x (the axis value of that arm at that
    scale), value; finished runs only). `target` maps each of the two arms to its axis value at
    the target. Only seeds finished in both arms at every scale are used (they are paired).
    A curve extrapolated far (a power of a huge or tiny ratio) may overflow to inf: that is
    the answer, shown with its caveat, not a warning."""
    with np.errstate(all="ignore"):
        return _forecast_pair(finals, variant, baseline, goal, target, target_label, draws, seed)


def _forecast_pair(finals, variant, baseline, goal, target, target_label, draws, seed) -> Forecast:
    sign = 1.0 if goal == "minimize" else -1.0  # fit "lower is better"
    out = Forecast(variant, target_label)
    both = finals[finals["variant"].isin([variant, baseline])]
    # the seeds finished in both arms at every scale where at least MIN_SEEDS of them did (a
    # scale still training is left out, not the seeds it has not finished yet)
    common = {scale: set(group.loc[group["variant"] == variant, "seed"]) & set(group.loc[group["variant"] == baseline,
                                                                                          "seed"])
              for scale, group in both.groupby("scale")}
    scales = sorted(scale for scale, seeds in common.items() if len(seeds) >= MIN_SEEDS)
    seeds = sorted(set.intersection(*(common[scale] for scale in scales))) if scales else []
    if len(scales) < MIN_SCALES or len(seeds) < MIN_SEEDS:
        out.note = (f"no forecast: needs {MIN_SCALES} scales at which both arms finished the same {MIN_SEEDS} or more "
                    f"seeds (they are paired by seed); found {len(scales)}")
        return out
    both = both[both["scale"].isin(scales)]
    table = both[both["seed"].isin(seeds)].pivot_table(index=["variant", "scale"], columns="seed", values="value")
    xs = both.groupby(["variant", "scale"])["x"].first()
    y_b, y_v = sign * table.loc[baseline].to_numpy(float), sign * table.loc[variant].to_numpy(float)  # scales x seeds
    x_b, x_v = xs.loc[baseline].to_numpy(float), xs.loc[variant].to_numpy(float)
    n = len(seeds)
    if (np.diff(x_b) <= 0).any() or (np.diff(x_v) <= 0).any():
        out.note = ("no forecast: the axis (report.forecast.axis: compute, params or tokens) does not grow from "
                    "each scale to the next; a ladder runs from small to large on it")
        return out

    law_b, law_v, sse, fitted = fit_pair(x_b, y_b.mean(1), x_v, y_v.mean(1))

    # the seed-to-seed noise, pooled over scales: the covariance of one seed's deviation from its
    # scale's mean in the two arms (a seed fixes data order and initialisation in both)
    deviations = np.stack([(y_b - y_b.mean(1, keepdims=True)).ravel(), (y_v - y_v.mean(1, keepdims=True)).ravel()])
    df = len(scales) * (n - 1)
    noise = deviations @ deviations.T / df
    t975 = float(stats.t.ppf(0.975, df))

    def estimate(means_b: np.ndarray, means_v: np.ndarray) -> tuple[float, float]:
        """(difference at the target, log multiplier at the largest scale) refitted on `means`."""
        base, var, _, _ = fit_pair(x_b, means_b, x_v, means_v, start=fitted)
        difference = float(var(target[variant]) - base(target[baseline])) if target else math.nan
        return difference, float(np.log(base.inverse(float(var(x_v[-1]))) / x_v[-1]))  # -inf if it underflows

    # how far the means stray from the fit, in units of their seed noise (reduced chi-squared):
    # where more than the noise explains, the fit is that much less certain (as curve_fit
    # scales its covariance when sigma is not absolute)
    residual_df = 2 * len(scales) - 5
    misfit = sse / max(float(np.trace(noise)) / 2 / n, 1e-12) / residual_df if residual_df > 0 else 1.0

    # a parametric bootstrap: every scale's two means drawn again with the seeds' pooled noise.
    # Resampling a handful of seeds themselves gives a handful of distinct fits (3 seeds: 10)
    # and understates the spread; the pooled noise has len(scales) * (n - 1) degrees of freedom.
    rng = np.random.default_rng(seed)
    draws_of_means = rng.multivariate_normal(np.zeros(2), max(1.0, misfit) * noise / n, size=(draws, len(scales)))
    resampled = np.array([estimate(y_b.mean(1) + drawn[:, 0], y_v.mean(1) + drawn[:, 1]) for drawn in draws_of_means])

    def sd(values: np.ndarray) -> float:
        finite = values[np.isfinite(values)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.inf

    # the multiplier's interval: the bootstrap's percentiles (skewed: a curve near its floor
    # needs far more compute for a little less loss; inf where the variant is below it)
    out.multiplier = law_b.inverse(float(law_v(x_v[-1]))) / x_v[-1]
    logs = resampled[~np.isnan(resampled[:, 1]), 1]
    out.multiplier_low, out.multiplier_high = (float(np.exp(q)) for q in np.quantile(
        logs, [0.025, 0.975], method="inverted_cdf")) if len(logs) else (math.nan, math.nan)

    notes = [f"poor fit: residuals {math.sqrt(misfit):.1f}x the seed noise"] if misfit > POOR_FIT else []
    ladder = int(finals["scale"].max()) + 1
    if len(scales) < ladder:  # a rung still training, or without seeds both arms finished
        notes.append(f"fitted on {len(scales)} of the ladder's {ladder} scales (the others lack {MIN_SEEDS} seeds "
                     "finished in both arms); the multiplier is at the largest of them")
    if target:
        reach = math.log(max(target.values()) / max(x_b[-1], x_v[-1]))
        span = math.log(max(x_b[-1], x_v[-1]) / min(x_b[0], x_v[0]))
        if reach > span:
            notes.append(f"far outside the ladder: {math.exp(min(reach, 700)):.3g}x beyond its largest scale, which "
                         f"spans {math.exp(span):.3g}x")
        if min(target.values()) < min(x_b[0], x_v[0]):
            notes.append("below the ladder: smaller than its smallest scale, where the fit was never checked")
        out.difference = sign * float(law_v(target[variant]) - law_b(target[baseline])) + 0.0  # no -0.0
        paired = noise[0, 0] + noise[1, 1] - 2 * noise[0, 1]  # variance of one seed's paired difference
        # what the fit adds beyond the largest scale measured is as uncertain as it is large: a
        # ladder's trend may bend (DataDecide's small-scale ranking beat eight scaling-law fits)
        moved = out.difference - sign * float((y_v[-1] - y_b[-1]).mean())
        spread = math.sqrt(sd(resampled[:, 0]) ** 2 + paired / n + moved ** 2)
        half = t975 * spread
        out.low, out.high = out.difference - half, out.difference + half
        # better: lower when minimizing (sign * difference < 0)
        out.p_better = float(stats.t.cdf(-sign * out.difference / spread, df)) if spread > 1e-12 else \
            0.5 if abs(out.difference) <= 1e-12 else float(sign * out.difference < 0)  # arms alike to rounding
    out.note = "; ".join(notes)
    return out


FORECAST_COLUMNS = list(Forecast.__dataclass_fields__)


def multiplier_text(forecast: Forecast, axis: str) -> str:
    """"1.15x compute [1.02, 1.31]": the baseline's axis factor that matches the variant."""
    if math.isnan(forecast.multiplier):
        return "–"
    def fmt(value: float) -> str:
        return "beyond the baseline's floor" if math.isinf(value) else f"{value:.2f}x"

    return f"{fmt(forecast.multiplier)} {axis} [{fmt(forecast.multiplier_low)}, {fmt(forecast.multiplier_high)}]"


def axis_value(config: dict, axis: str, vocab_size: int) -> float:
    """A run's position on the forecast axis from its configuration (`model`, `train` as a plan
    records them): training FLOPs (FLOPs per token, PaLM's count, times tokens trained),
    non-embedding parameters, or training tokens."""
    import torch

    from harness.config.model import ModelConfig
    from harness.model.gpt import GPT

    train, model = config["train"], ModelConfig.model_validate(config["model"])
    tokens = train["steps"] * train["batch_size"] * train.get("grad_accum", 1) * model.context_length
    if axis == "tokens":
        return float(tokens)
    with torch.device("meta"):
        gpt = GPT(model.for_vocabulary(vocab_size))
    return float(gpt.num_parameters(non_embedding=True) if axis == "params" else gpt.flops_per_token() * tokens)


def at_target(config: dict, at: dict) -> dict:
    """`config` with the target's settings (paths of `scales:`, `base.model.d_model`) applied."""
    config = {section: dict(values) if isinstance(values, dict) else values for section, values in config.items()}
    for path, value in at.items():
        section, field = path.removeprefix("base.").split(".", 1)
        config[section][field] = value
    return config


def final_values(results: pd.DataFrame, plan: PlanRecord, axis: str, vocab_size: int) -> pd.DataFrame:
    """The finished runs of a study with scales as forecast_pair reads them: variant, scale (its
    position, smallest first), seed, x (the run's axis value), value (the study's metric)."""
    position = {scale.label: index for index, scale in enumerate(plan.scales)}
    arms = {arm.name: arm for arm in plan.arms}
    x = {arm.name: axis_value(arm.config, axis, vocab_size) for arm in plan.arms}
    finished = results[results["state"] == RunState.FINISHED.value]
    return pd.DataFrame({"variant": [arms[a].variant for a in finished["arm"]],
                         "scale": [position[arms[a].scale] for a in finished["arm"]],
                         "seed": finished["seed"].to_numpy(), "x": [x[a] for a in finished["arm"]],
                         "value": finished[plan.metric].to_numpy(float)}).dropna(subset=["value"])


def forecast_study(results: pd.DataFrame, plan: PlanRecord, vocab_size: int) -> pd.DataFrame:
    """One row per variant (not the baseline) of a study with scales: its Forecast at the
    plan's target (`report.forecast`), and its multiplier at the largest scale."""
    settings = plan.forecast or ForecastSettings()
    finals = final_values(results, plan, settings.axis, vocab_size)
    largest = {arm.variant: arm.config for arm in plan.arms if arm.scale == plan.scales[-1].label}
    if settings.at:
        target = {variant: axis_value(at_target(config, settings.at), settings.axis, vocab_size)
                  for variant, config in largest.items()}
    else:
        target = {variant: settings.compute for variant in largest} if settings.compute else None
    rows = [forecast_pair(finals, variant, plan.baseline, plan.goal, target, settings.target_label()).__dict__
            for variant in largest if variant != plan.baseline]
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def forecast_rule(axis: str) -> str:
    """How the forecasts were made, with their sources, for the report's rules."""
    return (f"Each arm's final metric is fitted against {AXES[axis]} with a saturating power law L = E + A·x^−α "
            "(Kaplan et al. 2020; Hoffmann et al. 2022), one exponent per comparison as in OLMo's ladders "
            "(Bhagia et al. 2024). The forecast is the fitted difference at the target with a 95% prediction "
            "interval: the fit refitted on 200 parametric bootstrap draws of each scale's means (the seeds' pooled "
            "noise, widened by the misfit), the noise of a mean of this many seeds there, and the forecast's move "
            "beyond the largest difference measured, counted as uncertain as it is large; P(better) comes from the "
            "same distribution. "
            "The multiplier is the factor of the baseline's axis at which its fitted curve reaches the variant's "
            "fitted value at the largest scale. Ranking at a single small scale predicted the ranking at 1B about "
            "80% of the time in DataDecide (Magnusson et al. 2025), better per unit of compute than eight "
            "scaling-law methods; `ablate bench forecast` measures these forecasts against such naive rules on a "
            "ladder study.")
