"""`ablate eval`'s work: a trained model, from wherever it lies, scored on downstream tasks."""

from __future__ import annotations

import torch

from harness.config.eval import EvalConfig
from harness.training.build import resolve_device
from harness.training.starting_point import trained_model


def score_model(source: str, tasks: EvalConfig, device: str = "auto") -> dict[str, float]:
    """The downstream scores (`task/metric` -> value, with `_stderr`s) of a trained model: an
    ablate checkpoint or run folder, or `hf:<model>` (harness.training.starting_point), on
    `device`. Raises AblateError (harness.errors) for a model or task that cannot be loaded."""
    from harness.downstream.lm import AblateLM  # lm-eval is optional: imported when tasks are scored
    from harness.downstream.tasks import check_tasks, run_tasks

    check_tasks(tasks)
    model, tokenizer = trained_model(source, resolve_device(device))
    with torch.no_grad():
        return run_tasks(AblateLM(model.eval(), tokenizer, tasks.batch_size), tasks)
