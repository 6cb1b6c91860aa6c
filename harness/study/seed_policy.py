"""How many seeds each arm trains: all of them at once (`seeds: N` or a list), or one more at
a time while a verdict is unsettled (`seeds: {min, max}`, harness.report.sequential's rule).
`Study.run` asks its policy after each round of training; a new stopping rule is one class
with `next_counts`."""

from __future__ import annotations

import pandas as pd

from harness.config.study import SeedRange


class FixedSeeds:
    """Every planned seed trains in one round."""

    adds_seeds = False

    def next_counts(self, summary: pd.DataFrame, counts: dict[str, int]) -> dict[str, int] | None:
        return None


class SequentialSeeds:
    """One more seed for every arm whose verdict is unsettled, up to `rule.max` (and for the
    baseline, which pairs with them)."""

    adds_seeds = True

    def __init__(self, rule: SeedRange, baseline: str):
        self.rule, self.baseline = rule, baseline

    def next_counts(self, summary: pd.DataFrame, counts: dict[str, int]) -> dict[str, int] | None:
        """The next round's seeds per arm (from `counts`, this round's), or None when every
        verdict is settled, every arm is at its most seeds, or a run failed (the next `ablate
        run` retries it first). `summary` is the report's, one row per arm."""
        if (summary["failed"] > 0).any() or (summary["unfinished"] > 0).any():
            return None
        unsettled = [arm for arm in summary.loc[~summary["settled"], "arm"] if counts[arm] < self.rule.max]
        if not unsettled:
            return None
        more = dict(counts)
        for arm in unsettled:
            more[arm] += 1
        more[self.baseline] = max(more.values())
        return more
