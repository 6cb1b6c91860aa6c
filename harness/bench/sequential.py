"""`ablate bench sequential`: the sequential seed rule on simulated studies (no training).

Each simulated study has `arms` arms facing a baseline. A seed's final value is Normal with
standard deviation 1 in every arm, the arms shifted by `effect` standard deviations of a
seed's paired difference (arm minus baseline, standard deviation sqrt(2)); arms share the
baseline's values, as in a study, so their comparisons are correlated. Seeds are added exactly as `ablate run` adds them (harness.report.sequential):
every arm starts with `min` seeds, unsettled arms get one more per look, up to `max`. The
same studies are also judged the fixed way (every arm at `max` seeds, Holm).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.sequential import SequentialRule, paired_p
from harness.report.stats import holm


def simulate(rule: SequentialRule, arms: int, effect: float, studies: int, rng: np.random.Generator) -> dict:
    baseline = rng.normal(0.0, 1.0, size=(studies, 1, rule.max_seeds))
    values = rng.normal(effect * math.sqrt(2), 1.0, size=(studies, arms, rule.max_seeds))
    differences = values - baseline
    rejected = np.zeros((studies, arms), dtype=bool)
    seeds = np.full((studies, arms), rule.max_seeds)
    settled = np.zeros((studies, arms), dtype=bool)
    for n in range(rule.min_seeds, rule.max_seeds + 1):
        reject = (paired_p(differences, n) <= rule.level(n, arms)) & ~settled
        rejected |= reject
        seeds[reject] = n
        settled |= reject
    # the baseline trains as many seeds as its longest-running arm
    seeds_per_study = seeds.sum(1) + seeds.max(1)
    final_p = paired_p(differences, rule.max_seeds)
    fixed = np.array([[p < 0.05 for p in holm(list(row))] for row in final_p])
    return {"any rejected": rejected.any(1).mean(), "rejected per arm": rejected.mean(),
            "seeds per study": seeds_per_study.mean(), "fixed: any rejected": fixed.any(1).mean(),
            "fixed: rejected per arm": fixed.mean(), "fixed: seeds per study": (arms + 1) * rule.max_seeds}


def sequential(studies: int = 2000, min_seeds: int = 3, max_seeds: int = 10, arms: int = 2, effect: float = 1.5,
               seed: int = 0) -> str:
    rule = SequentialRule(min_seeds, max_seeds)
    rng = np.random.default_rng(seed)  # independent of the boundaries' own simulation
    null, alternative = simulate(rule, arms, 0.0, studies, rng), simulate(rule, arms, effect, studies, rng)
    table = pd.DataFrame([
        {"scenario": "no effect", "measure": "family-wise error (any arm called better/worse)",
         "sequential": f"{null['any rejected']:.2%}", "fixed max seeds": f"{null['fixed: any rejected']:.2%}"},
        {"scenario": f"effect {effect:g} sd", "measure": "power (share of arms called)",
         "sequential": f"{alternative['rejected per arm']:.1%}",
         "fixed max seeds": f"{alternative['fixed: rejected per arm']:.1%}"},
        {"scenario": "no effect", "measure": "seeds trained per study",
         "sequential": f"{null['seeds per study']:.1f}", "fixed max seeds": f"{null['fixed: seeds per study']}"},
        {"scenario": f"effect {effect:g} sd", "measure": "seeds trained per study",
         "sequential": f"{alternative['seeds per study']:.1f}",
         "fixed max seeds": f"{alternative['fixed: seeds per study']}"},
    ])
    error = null["any rejected"]
    low, high = stats.binomtest(round(error * studies), studies).proportion_ci()
    verdict = "within" if error <= rule.alpha else "ABOVE"
    return (f"sequential seeds {min_seeds}..{max_seeds}, {arms} arm(s) against a baseline, {studies} simulated studies "
            f"per scenario\n{table.to_markdown(index=False)}\n"
            f"family-wise error at no effect: {error:.2%} (95% CI {low:.2%} to {high:.2%}), {verdict} the "
            f"{rule.alpha:.0%} target; "
            f"seeds saved at effect {effect:g} sd: "
            f"{1 - alternative['seeds per study'] / alternative['fixed: seeds per study']:.0%}")
