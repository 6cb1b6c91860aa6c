"""The sequential seed rule: its boundaries spend exactly the alpha they may, and on
simulated studies the family-wise error stays at 5%."""

import numpy as np
import pytest

from harness.bench.sequential import simulate
from harness.report.sequential import CALIBRATION_SAMPLES, SequentialRule


def test_the_looks_spend_the_alpha_of_the_spending_function():
    rule = SequentialRule(3, 10)
    levels = [rule.level(n, 2) for n in range(3, 11)]
    assert all(0 < level < 0.025 for level in levels)
    assert levels == sorted(levels), "O'Brien-Fleming-type: strict early, close to alpha at the last look"
    assert rule.spent(10, 0.025) == pytest.approx(0.025) and rule.spent(2, 0.025) == 0
    assert rule.level(2, 2) == 0 and rule.level(11, 2) == 0, "no look outside min..max"
    assert rule.adjusted(levels[-1], 10, 2) == pytest.approx(0.05)


def test_on_independent_simulations_the_family_wise_error_is_five_percent():
    studies = 20_000
    result = simulate(SequentialRule(3, 10), 1, 0.0, studies, np.random.default_rng(1))
    standard_error = (0.05 * 0.95 / studies) ** 0.5 + (0.05 * 0.95 / CALIBRATION_SAMPLES) ** 0.5
    assert abs(result["any rejected"] - 0.05) < 3 * standard_error


def test_a_large_effect_settles_early_and_no_effect_runs_to_max():
    rule = SequentialRule(3, 10)
    large = simulate(rule, 2, 3.0, 2000, np.random.default_rng(2))
    none = simulate(rule, 2, 0.0, 2000, np.random.default_rng(3))
    assert large["rejected per arm"] > 0.99 and large["seeds per study"] < 0.6 * large["fixed: seeds per study"]
    assert none["seeds per study"] > 0.95 * none["fixed: seeds per study"]
