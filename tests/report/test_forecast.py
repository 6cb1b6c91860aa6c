"""Forecasts across scale (harness.report.forecast), checked on simulated ladders whose true
curves are known, and where a verdict settled during training (harness.report.settling)."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.config.train import TrainConfig
from harness.report.forecast import PowerLaw, fit_pair, forecast_pair
from harness.report.settling import _settled, settled_text, settling_points

WIDTHS = np.array([1, 2, 4, 8, 16], float) * 1e12  # training FLOPs of a ladder's five rungs
TARGET = 64e12


def ladder(rng, base: PowerLaw, multiplier: float, noise: float, seeds: int = 3, goal: str = "minimize"):
    """Final values of a baseline and a variant that reaches the baseline's value at
    `multiplier` times its compute; each seed shifts both arms alike (it fixes data order and
    initialisation), and each run adds noise of its own."""
    rows = []
    shared = rng.normal(0, noise, seeds)
    for scale, x in enumerate(WIDTHS):
        for seed in range(seeds):
            for variant, value in (("base", base(x)), ("variant", base(multiplier * x))):
                value = value + shared[seed] + rng.normal(0, noise)
                rows.append({"variant": variant, "scale": scale, "seed": seed, "x": x,
                             "value": value if goal == "minimize" else -value})
    return pd.DataFrame(rows)


def test_a_noiseless_power_law_is_recovered():
    truth = PowerLaw(E=1.9, A=1.1, alpha=0.35, x0=WIDTHS[0])
    other = PowerLaw(E=1.7, A=1.3, alpha=0.35, x0=WIDTHS[0])
    base, variant, sse, _ = fit_pair(WIDTHS, truth(WIDTHS), WIDTHS, other(WIDTHS))
    assert sse < 1e-12
    for fitted, true in ((base, truth), (variant, other)):
        assert (fitted.E, fitted.A, fitted.alpha) == pytest.approx((true.E, true.A, true.alpha), rel=1e-4)
    assert base.inverse(float(base(5e12))) == pytest.approx(5e12, rel=1e-6)
    assert base.inverse(1.0) == math.inf, "below the floor E no compute is enough"


def test_intervals_cover_the_truth_of_simulated_ladders_at_their_nominal_rate():
    """40 simulated ladders with known multipliers (0.8x to 1.4x compute) and seed noise: the
    95% prediction interval holds the difference a 3-seed study measures at 4x the largest rung,
    the multiplier interval holds the true multiplier, each in at least about 95% of ladders;
    P(better) scores a Brier under always-50%'s 0.25."""
    rng = np.random.default_rng(7)
    covered, multiplier_covered, brier = [], [], []
    for _ in range(40):
        base = PowerLaw(E=1.8, A=1.2, alpha=rng.uniform(0.2, 0.6), x0=WIDTHS[0])
        multiplier = rng.uniform(0.8, 1.4)
        forecast = forecast_pair(ladder(rng, base, multiplier, noise=0.01), "variant", "base", "minimize",
                                 {"variant": TARGET, "base": TARGET}, "4x", draws=100)
        true = float(base(multiplier * TARGET) - base(TARGET))
        measured = true + rng.normal(0, 0.01 * math.sqrt(2 / 3))
        covered.append(forecast.low <= measured <= forecast.high)
        multiplier_covered.append(forecast.multiplier_low <= multiplier <= forecast.multiplier_high)
        brier.append((forecast.p_better - (measured < 0)) ** 2)
    # 40 ladders: 95% coverage gives 35 or more with probability 0.99
    assert 35 <= sum(covered) <= 40 and 35 <= sum(multiplier_covered) <= 40
    assert np.mean(brier) < 0.2


def test_a_score_to_maximize_is_forecast_the_right_way_round():
    rng = np.random.default_rng(3)
    base = PowerLaw(E=0.2, A=0.5, alpha=0.4, x0=WIDTHS[0])
    finals = ladder(rng, base, 2.0, noise=0.002, goal="maximize")  # accuracy = -loss: the variant is better
    forecast = forecast_pair(finals, "variant", "base", "maximize", {"variant": TARGET, "base": TARGET}, "4x",
                             draws=100)
    assert forecast.difference > 0 and forecast.p_better > 0.75
    assert forecast.multiplier == pytest.approx(2.0, rel=0.2)


def test_what_a_forecast_cannot_say_is_said():
    rng = np.random.default_rng(5)
    base = PowerLaw(E=1.8, A=1.2, alpha=0.4, x0=WIDTHS[0])
    finals = ladder(rng, base, 1.2, noise=0.01)
    far = forecast_pair(finals, "variant", "base", "minimize", {"variant": 1e18, "base": 1e18}, "far", draws=50)
    assert "far outside the ladder" in far.note
    two = forecast_pair(finals[finals["scale"] < 2], "variant", "base", "minimize", None, "", draws=50)
    assert two.note.startswith("no forecast: needs 3 scales") and math.isnan(two.multiplier)
    bent = finals.assign(value=finals["value"] + np.where(finals["scale"] == 2, 0.3, 0.0))  # no power law
    assert "poor fit" in forecast_pair(bent, "variant", "base", "minimize", None, "", draws=50).note
    unfinished = finals[~((finals["scale"] == 4) & (finals["seed"] > 0))]  # the largest rung still training
    partial = forecast_pair(unfinished, "variant", "base", "minimize", None, "", draws=50)
    assert partial.note == "fitted on 4 of the ladder's 5 scales (the others lack 2 seeds finished in both arms); " \
                           "the multiplier is at the largest of them", "the rung is left out, and the report says so"
    assert not math.isnan(partial.multiplier), "not the seeds of every rung"


def test_a_verdict_settles_where_it_stops_changing_and_a_change_in_the_decay_is_flagged():
    train = TrainConfig(steps=400, warmup_steps=40, lr=1e-3)  # cosine: below half the peak after step 220
    settled = _settled([(100, "no difference"), (200, "better"), (300, "better"), (400, "better")], train)
    assert settled["settled_step"] == 200 and settled["flipped_in_decay"] == ""
    assert settled["verdict_history"] == "100: no difference; 200: better"
    late = _settled([(100, "worse"), (200, "worse"), (300, "no difference"), (400, "better")], train)
    assert late["settled_step"] == 400 and late["flipped_in_decay"] == "at step 400: no difference -> better", \
        "the change that gave the final verdict"
    row = {"verdict": "-0.0100 ± 0.0040, p = 0.01, better", **late}
    assert settled_text(row) == ("settled at step 400 of 400; changed during the learning-rate decay "
                                 "(at step 400: no difference -> better)")
    assert settled_text({**row, "verdict": "incomplete: 1 of 3 seeds finished"}) == ""


def test_an_axis_the_scales_do_not_move_gives_no_forecast():
    """A width ladder read on axis: tokens (every width trains as many tokens) has one x."""
    finals = ladder(np.random.default_rng(2), PowerLaw(E=1.8, A=1.2, alpha=0.4, x0=WIDTHS[0]), 1.2, noise=0.01)
    flat = forecast_pair(finals.assign(x=1e9), "variant", "base", "minimize", {"variant": 1e10, "base": 1e10}, "t")
    assert flat.note.startswith("no forecast: the axis") and "does not grow" in flat.note and math.isnan(flat.difference)


def test_warmup_and_a_constant_schedule_are_no_decay():
    verdicts = [(4, "no difference"), (10, "better"), (20, "better"), (30, "better")]
    warming = TrainConfig(steps=30, warmup_steps=20, lr=1e-3, schedule="constant")
    assert _settled(verdicts, warming)["flipped_in_decay"] == ""
    assert _settled([(4, "better"), (28, "worse")], warming)["flipped_in_decay"] == ""


def test_a_target_below_the_ladder_and_a_flat_baseline_are_answered_without_a_crash():
    rng = np.random.default_rng(4)
    base = PowerLaw(E=1.8, A=1.2, alpha=0.4, x0=WIDTHS[0])
    below = forecast_pair(ladder(rng, base, 1.3, noise=0.01), "variant", "base", "minimize",
                          {"variant": 1.0, "base": 1.0}, "tiny", draws=50)
    assert "below the ladder" in below.note
    flat = ladder(rng, PowerLaw(E=3.0, A=1e-9, alpha=0.01, x0=WIDTHS[0]), 1.0, noise=1e-4)
    flat.loc[flat["variant"] == "variant", "value"] += 0.5  # far above a baseline that never moves
    forecast = forecast_pair(flat, "variant", "base", "minimize", {"variant": TARGET, "base": TARGET}, "4x",
                             draws=50)
    assert forecast.difference > 0 and not math.isnan(forecast.multiplier_low)


def test_an_evaluation_some_seed_skipped_is_left_out_not_read_as_no_difference():
    """A run resumed with another eval_interval has evaluations the other seeds lack: a verdict
    there would rest on fewer seeds. Such steps are skipped; the arm settles where its seeds agree."""
    from harness.config.records import PlanRecord

    train = {"steps": 30, "warmup_steps": 2, "lr": 1e-3}
    plan = PlanRecord(study="s", baseline="a", metric="val_loss", goal="minimize", runs=[],
                      arms=[{"name": "a", "config": {"train": train}}, {"name": "b", "config": {"train": train}}])
    rows = [{"arm": arm, "seed": seed, "step": step, "value": 2.0 - 0.01 * step - (0.3 if arm == "b" else 0) + 0.001 * seed}
            for arm in ("a", "b") for seed in range(3) for step in (10, 20, 30)]
    rows.append({"arm": "b", "seed": 0, "step": 15, "value": 9.0})  # one seed's extra evaluation, far off
    settled = settling_points(pd.DataFrame(rows), plan).set_index("arm")
    assert settled.loc["b", "verdict_history"] == "10: better" and settled.loc["b", "settled_step"] == 10
