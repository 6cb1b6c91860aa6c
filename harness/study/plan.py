"""From a study to its runs: every arm x seed resolved into a RunSpec, the data they need
loaded once, and an estimate of what training them costs.

Runs are ordered seed-major (every arm's first seed, then every arm's second, ...), so a
study stopped half-way already compares all arms.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pandas as pd
import pydantic
import torch

from harness.data import load_dataset
from harness.errors import AblateError, describe_validation_error
from harness.model.gpt import GPT
from harness.spec import RunSpec
from harness.study.paths import set_run_field
from harness.study.schema import Arm, StudySpec
from harness.training.optim import make_optimizer
from harness.training.trainer import resolve_device


def arm_spec(study: StudySpec, arm: Arm, where: str = "study", extra: dict[str, Any] | None = None) -> RunSpec:
    """The run of `arm` (seed 0), with `extra` path -> value settings on top (tuned values)."""
    tree = {**study.base.run_tree(), "data": study.data.model_dump(mode="json")}
    for path, value in {**arm.set, **(extra or {})}.items():
        set_run_field(tree, path, copy.deepcopy(value), f"{where}: arm '{arm.name}'")
    try:
        return RunSpec(study=study.name, arm=arm.name, **tree)
    except pydantic.ValidationError as err:
        raise AblateError(describe_validation_error(err, f"{where}: arm '{arm.name}'")) from None
    except AblateError as err:
        raise AblateError(f"{where}: arm '{arm.name}': {err}") from None


def expand(study: StudySpec, where: str = "study", tuned: dict[str, dict[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of the study, seed-major. `tuned` gives each arm's best tuned settings
    (path -> value)."""
    per_arm = {arm.name: arm_spec(study, arm, where, (tuned or {}).get(arm.name)) for arm in study.arm_list()}
    if study.match == "params":
        from harness.study.matching import match_parameters

        per_arm = match_parameters(per_arm, study.baseline, where)
    return [spec.model_copy(update={"seed": seed}) for seed in study.seeds for spec in per_arm.values()]


def check_data(specs: list[RunSpec]) -> dict:
    """Load each distinct dataset once, before any training: a missing file, a context longer
    than the data or a vocabulary smaller than the tokenizer's fails here. Returns the
    datasets by their configuration (as JSON)."""
    datasets = {}
    for spec in specs:
        key = spec.data.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(spec.data)
        try:
            datasets[key].check_context(spec.model.context_length)
            spec.model.for_vocabulary(datasets[key].vocab_size)
        except ValueError as err:
            raise AblateError(f"arm '{spec.arm}': {err}") from None
    return datasets


def measure_step_seconds(spec: RunSpec, vocab_size: int, steps: int = 2) -> float:
    """Time a few optimizer steps of this arm's model on random tokens (after one warm-up)."""
    device = resolve_device(spec.train.device)
    torch.manual_seed(0)
    model = GPT(spec.model.for_vocabulary(vocab_size)).to(device)
    optimizer = make_optimizer(model, spec.train, device)
    x = torch.randint(vocab_size, (spec.train.batch_size, spec.model.context_length), device=device)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        for _ in range(spec.train.grad_accum):
            model(x, x)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def estimate(study: StudySpec, specs: list[RunSpec], datasets: dict) -> pd.DataFrame:
    """One row per arm: its size, cost per token, tokens per run and measured time per run."""
    rows = []
    for spec in (s for s in specs if s.seed == study.seeds[0]):
        vocab = datasets[spec.data.model_dump_json()].vocab_size
        with torch.device("meta"):
            model = GPT(spec.model.for_vocabulary(vocab))
        rows.append({
            "arm": spec.arm, "seeds": len(study.seeds),
            "params_non_embedding": model.num_parameters(non_embedding=True),
            "flops_per_token": model.flops_per_token(),
            "tokens_per_run": spec.train.steps * spec.train.batch_size * spec.train.grad_accum
                              * spec.model.context_length,
            "seconds_per_run": measure_step_seconds(spec, vocab) * spec.train.steps,
        })
    return pd.DataFrame(rows)
