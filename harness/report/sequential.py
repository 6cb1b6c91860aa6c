"""Adding seeds until the verdicts settle, with the family-wise error still at 5%.

A study with `seeds: {min: 3, max: 10}` first trains `min` seeds of every arm, then adds one
seed at a time to the baseline and to every arm whose verdict is not settled, up to `max`.
Looking at the data after every seed and stopping when it looks good would inflate the error
rate; a group-sequential design keeps it (Jennison & Turnbull 2000, "Group Sequential
Methods with Applications to Clinical Trials"):

- each arm's comparison is a paired t-test looked at after n = min, ..., max seeds;
- alpha spending (Lan & DeMets 1983) with the O'Brien-Fleming-type function
  a(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), t = n / max: the look at n seeds may spend
  a(n/max) - a((n-1)/max) of the arm's alpha. Little is spent early, so a large difference
  settles early while the last look keeps nearly the power of a fixed design;
- the p-value boundary of each look is computed so that the chance of a first false
  rejection at that look, given none before, is exactly what it may spend: by simulation of
  the paired t statistics under no difference (their null distribution does not depend on
  the spread of the data), with a fixed random seed, so every run gets the same boundaries;
- Bonferroni over the m arms facing the baseline: each arm's alpha is 5% / m.

`ablate bench sequential` checks the family-wise error on independent simulations and
measures the power and the seeds saved against training `max` seeds of every arm.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
CALIBRATION_SAMPLES = 200_000


def paired_p(differences: np.ndarray, seeds: int) -> np.ndarray:
    """Two-sided p-values of the paired t-test on the first `seeds` differences (last axis)."""
    head = differences[..., :seeds]
    t = head.mean(-1) / (head.std(-1, ddof=1) / math.sqrt(seeds))
    return 2 * stats.t.sf(np.abs(t), seeds - 1)


@dataclass(frozen=True)
class SequentialRule:
    min_seeds: int
    max_seeds: int
    alpha: float = ALPHA

    def spent(self, seeds: int, alpha: float) -> float:
        """The share of `alpha` spent once `seeds` seeds have been looked at."""
        if seeds < self.min_seeds:
            return 0.0
        t = min(seeds, self.max_seeds) / self.max_seeds
        return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)))

    def level(self, seeds: int, arms: int) -> float:
        """The p-value boundary of one arm's look at `seeds` seeds, `arms` arms facing the baseline."""
        if seeds < self.min_seeds or seeds > self.max_seeds:
            return 0.0
        return _boundaries(self, self.alpha / arms)[seeds - self.min_seeds]

    def adjusted(self, p: float, seeds: int, arms: int) -> float:
        """`p` scaled so that comparing it with alpha is this look's test."""
        level = self.level(seeds, arms)
        return min(1.0, p * self.alpha / level) if level > 0 else 1.0

    def describe(self, arms: int) -> str:
        return (f"Seeds were added one at a time from {self.min_seeds} up to {self.max_seeds} while a verdict was "
                f"unsettled: a group-sequential design (O'Brien-Fleming-type alpha spending, Lan & DeMets 1983, "
                f"boundaries for the paired t-test by simulation) with Bonferroni over the {arms} arm(s) facing the "
                f"baseline keeps the family-wise error at {self.alpha:.0%}. Adjusted p-values are the test's p "
                f"scaled by the boundary of the arm's last look, so that p < {self.alpha} means the look rejected.")


@functools.cache
def _boundaries(rule: SequentialRule, alpha: float) -> tuple[float, ...]:
    """The p-value boundary of each look n = min..max: among simulated null studies not
    rejected before, the look rejects exactly what the spending function allows it."""
    null = np.random.default_rng(20261123).standard_normal((CALIBRATION_SAMPLES, rule.max_seeds))
    alive = np.ones(CALIBRATION_SAMPLES, dtype=bool)
    boundaries = []
    for seeds in range(rule.min_seeds, rule.max_seeds + 1):
        allowed = rule.spent(seeds, alpha) - rule.spent(seeds - 1, alpha)
        rejections = int(allowed * CALIBRATION_SAMPLES)
        p = paired_p(null, seeds)
        boundary = float(np.sort(p[alive])[rejections - 1]) if rejections > 0 else 0.0
        boundaries.append(boundary)
        alive &= p > boundary
    return tuple(boundaries)
