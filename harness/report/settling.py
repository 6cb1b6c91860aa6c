"""When a verdict settled: the point of training after which it no longer changed.

Every evaluation of the paired seeds is judged as the final values are (harness.report.stats:
the same test, the same Holm adjustment over the arms of a comparison), giving each comparison
a verdict per evaluation step: better, worse or no difference. A verdict settled at the first
step from which it stays what it is at the end. One that changed while the learning rate was
below half its peak (the second half of a cosine decay, a linear decay's cool-down) is flagged:
optimizer comparisons on Marin found rankings that flip during the decay, so a verdict read
before the decay ends would have been wrong.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.config.records import PlanRecord
from harness.config.run_state import RunState
from harness.config.train import TrainConfig
from harness.report.sequential import SequentialRule
from harness.report.stats import summarize
from harness.training.optim import lr_at

NO_DIFFERENCE = "no difference"
DECAY_SHARE = 0.5  # the decay: steps whose learning rate is below this share of the peak
SETTLING_COLUMNS = ["arm", "settled_step", "steps", "verdict_history", "flipped_in_decay"]


def settling_points(curves: pd.DataFrame, plan: PlanRecord, rule: SequentialRule | None = None) -> pd.DataFrame:
    """One row per arm compared with a baseline: arm, settled_step, steps, verdict_history (the
    verdict at each step where it changed, "step: verdict; ..."), flipped_in_decay (the last
    change in the decay, "" if none). `curves` holds the finished runs' evaluations (arm, seed,
    step, value); `rule` adjusts p-values as the final verdicts' were (a sequential study)."""
    rows = []
    for baseline, names in _comparisons(plan).items():
        arms = curves[curves["arm"].isin(names)]
        if arms.empty:
            continue
        seeds = arms.groupby("arm")["seed"].nunique()
        labels = {}  # step -> {arm: verdict}, for the arms every seed of which was evaluated there
        for step, at_step in arms.groupby("step"):
            evaluated = at_step.groupby("arm")["seed"].nunique()
            # a step some seed skipped (a run resumed with another eval_interval) would judge the
            # arm on the seeds that have it: it is left out, never read as "no difference"
            complete = [name for name in names if name in seeds and evaluated.get(name, 0) == seeds[name]]
            if baseline not in complete:
                continue
            frame = at_step[at_step["arm"].isin(complete)].assign(
                state=RunState.FINISHED.value, speed_caveat="",
                **{c: math.nan for c in ("params_non_embedding", "params", "flops_per_token", "tokens_per_s",
                                         "wall_time_s")})
            summary = summarize(frame, "value", baseline, plan.goal, complete, rule=rule)
            labels[int(step)] = {row.arm: row.outcome or NO_DIFFERENCE for row in summary.itertuples()}
        for arm in names:
            if arm == baseline:
                continue
            verdicts = [(step, labels[step][arm]) for step in sorted(labels) if arm in labels[step]]
            rows.append({"arm": arm, **_settled(verdicts, _train_config(plan, arm))})
    return pd.DataFrame(rows, columns=SETTLING_COLUMNS)


def _comparisons(plan: PlanRecord) -> dict[str, list[str]]:
    """{baseline: the arms compared with it (baseline first)}: one per scale, or the study's."""
    groups: dict[str, list[str]] = {}
    for arm in plan.arms:
        groups.setdefault(arm.baseline or plan.baseline, []).append(arm.name)
    return {base: [base] + [name for name in names if name != base] for base, names in groups.items()}


def _train_config(plan: PlanRecord, arm: str) -> TrainConfig:
    return TrainConfig.model_validate(next(a.config["train"] for a in plan.arms if a.name == arm))


def _settled(verdicts: list[tuple[int, str]], train: TrainConfig) -> dict:
    """Where a sequence of (step, verdict) settled, what it went through, and its last change in the decay."""
    if not verdicts:
        return {"settled_step": math.nan, "steps": train.steps, "verdict_history": "", "flipped_in_decay": ""}
    settled = verdicts[0][0]
    changes = [verdicts[0]]
    for (_, before), (step, verdict) in zip(verdicts, verdicts[1:]):
        if verdict != before:
            changes.append((step, verdict))
            settled = step
    # the last change in the decay: the one a reader of an earlier evaluation missed
    in_decay = next((f"at step {step}: {before} -> {verdict}"
                     for (_, before), (step, verdict) in reversed(list(zip(verdicts, verdicts[1:])))
                     if verdict != before and step > train.warmup_steps
                     and lr_at(step - 1, train) < DECAY_SHARE * train.lr), "")
    return {"settled_step": settled, "steps": train.steps,
            "verdict_history": "; ".join(f"{step}: {verdict}" for step, verdict in changes), "flipped_in_decay": in_decay}


SETTLING_RULE = ("A verdict settled at the first evaluation from which it stayed what it is at the end (every "
                 "evaluation judged as the final values are); one that changed while the learning rate was below "
                 f"{DECAY_SHARE:.0%} of its peak is flagged: read before the decay ended, it would have been wrong.")


def settled_text(row: dict) -> str:
    """"settled at step 250 of 400", with a change during the decay ("; changed during the
    learning-rate decay (at step 350: worse -> no difference)"); "" for an arm without a tested
    verdict (incomplete, unstable: nothing settled)."""
    step = row.get("settled_step")
    verdict = str(row.get("verdict", ""))
    if step is None or (isinstance(step, float) and math.isnan(step)) or not verdict or verdict[0] not in "+-0123456789":
        return ""
    text = f"settled at step {int(step):,} of {int(row['steps']):,}"
    if row.get("flipped_in_decay"):
        text += f"; changed during the learning-rate decay ({row['flipped_in_decay']})"
    return text
