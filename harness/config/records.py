"""The record that passes between study, tracking and report: what an execution set out to
train (its plan). The study writes it (harness.study.plan.plan_record), the tracker keeps it on
the execution's parent run as `plan.json`, and the report reads exactly these runs back.

Fields an older ablate did not record have defaults, so its plans still read."""

from __future__ import annotations

from typing import Literal

import pydantic

from harness.config.study import ForecastSettings, SeedRange


class PlannedArm(pydantic.BaseModel):
    """One arm as it trains: its resolved configuration (`model`, `train`, `data`, `sources`
    as RunSpec dumps them). In a study with scales an arm is one variant at one scale."""

    name: str
    config: dict
    variant: str | None = None  # with scales: the arm of the study file this is
    scale: str | None = None  # with scales: the scale's label (`d_model=64`)
    baseline: str | None = None  # with scales: the baseline arm at this scale


class UntunedArm(pydantic.BaseModel):
    """An arm that tuning left without a setting: it is named in the report, not trained."""

    name: str
    reason: str
    config: dict


class PlannedScale(pydantic.BaseModel):
    label: str
    settings: dict


class PlannedRun(pydantic.BaseModel):
    arm: str
    seed: int
    run_key: str


class PlanRecord(pydantic.BaseModel):
    """What an execution sets out to train; its report covers exactly `runs`."""

    study: str
    description: str | None = None
    study_file: str | None = None
    baseline: str
    metric: str
    goal: Literal["minimize", "maximize"]
    tuned: list[str] = []  # the dotted paths tuned per arm
    untuned: list[UntunedArm] = []
    seeds: list[int] = []
    sequential: SeedRange | None = None  # seeds added while a verdict is unsettled
    arms: list[PlannedArm]
    scales: list[PlannedScale] = []
    forecast: ForecastSettings | None = None  # with scales: where verdicts are forecast
    runs: list[PlannedRun]

    def arm_configs(self) -> list[dict]:
        """The configuration of every arm, trained or left untuned by tuning."""
        return [arm.config for arm in self.arms] + [arm.config for arm in self.untuned]
