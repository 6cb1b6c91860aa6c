"""Downstream evaluation of a run: lm-evaluation-harness tasks, how many examples, and when."""

from __future__ import annotations

import pydantic
from pydantic import Field

from harness.settings import Settings


class EvalConfig(Settings):
    """Tasks scored through lm-evaluation-harness (harness.downstream) during and after training.

    A task is an lm-eval task name (`hellaswag`, `arc_easy`: their data from the local Hugging
    Face datasets cache, never downloaded), the path of an lm-eval task YAML whose data are local
    files, or `python_cloze`, the multiple-choice task shipped with ablate. Each task's metrics are
    logged on the run as `task/metric` (`hellaswag/acc_norm`) with `task/metric_stderr`.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    tasks: list[str] = Field(min_length=1, description="lm-eval task names, task YAML paths, or python_cloze")
    limit: int | None = Field(None, gt=0, description="examples per task (the first ones); default every example")
    every: int | None = Field(None, gt=0, description="steps between evaluations, a multiple of train.eval_interval; "
                                                      "default only at the end of training")
    num_fewshot: int | None = Field(None, ge=0, description="examples shown before each question; default "
                                                            "each task's own (0 for most)")
    batch_size: int = Field(16, gt=0, description="sequences per forward pass")

    @pydantic.field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("a task is named twice")
        return tasks
