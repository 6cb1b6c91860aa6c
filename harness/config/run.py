"""A run, fully resolved: model, training, data and seed, with a stable identity."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import pydantic

from harness.config.data import DataConfig
from harness.config.eval import EvalConfig
from harness.config.model import ModelConfig
from harness.config.train import TrainConfig
from harness.redaction import redact
from harness.registry import MODEL_SLOTS
from harness.settings import Settings

# settings that choose where and how fast a run computes, not what it computes: the
# kernels give the same numbers within rounding, so they do not make a run a new one
EXECUTION_FIELDS = {"device", "compile", "fused", "tf32", "checkpoint_interval", "threads"}
MODEL_EXECUTION_FIELDS = {"attention_backend", "kernels"}
MOST_TOKENS_PER_MICRO_BATCH = 2**24
# a seed is what torch, NumPy and most tools take whole: a 32-bit unsigned integer
MAX_SEED = 2**32 - 1
Seed = Annotated[int, pydantic.Field(ge=0, le=MAX_SEED, description=f"a seed: 0 to {MAX_SEED}")]


class RunSpec(Settings):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    study: str = "run"
    arm: str = "base"
    seed: Seed = 0
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig | None = None  # downstream tasks (lm-evaluation-harness); None: validation metrics only
    # what decides the numbers beyond the configuration: the data's content, the tokenizer,
    # the code of plugin variants (filled in by the plan, harness.study.plan.with_sources)
    sources: dict[str, str] = pydantic.Field(default_factory=dict)

    @pydantic.model_validator(mode="after")
    def _tasks_at_evaluations(self):
        if self.eval and self.eval.every and self.eval.every % self.train.eval_interval:
            raise ValueError(f"eval.every ({self.eval.every}) must be a multiple of train.eval_interval "
                             f"({self.train.eval_interval}): tasks are scored at validation steps")
        return self

    @pydantic.model_validator(mode="after")
    def _micro_batch_fits_a_device(self):
        # its logits alone would be terabytes: a typo of a few zeros, refused before anything is allocated
        tokens = self.train.batch_size * self.model.context_length
        if tokens > MOST_TOKENS_PER_MICRO_BATCH:
            raise ValueError(f"train.batch_size {self.train.batch_size} x context_length {self.model.context_length} "
                             f"is {tokens:.1e} tokens per micro-batch, more than {MOST_TOKENS_PER_MICRO_BATCH:.1e}; "
                             "lower the batch (train.grad_accum keeps the tokens per step)")
        return self

    def key(self) -> str:
        """Hash of everything that determines the result (not the study or arm labels, not the
        device): the same run is recognised however the study that asked for it was written,
        and a run of other data, another tokenizer or edited plugin code is another run."""
        train = self.train.model_dump(mode="json", exclude=EXECUTION_FIELDS)
        if "init_from" in self.sources:  # the starting weights by their content, not by where they lie
            train.pop("init_from")
        model = self.model.model_dump(mode="json", exclude=MODEL_EXECUTION_FIELDS)
        identity = {"model": model, "train": train, "data": self.data.model_dump(mode="json"), "seed": self.seed,
                    "sources": self.sources}
        if self.eval is not None:  # a run with tasks logs more; one without keeps the key it always had
            identity["eval"] = self.eval.model_dump(mode="json")
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def execution_settings(self) -> dict[str, str]:
        """The settings that choose where and how fast the run computes, as asked for
        (`train.threads` -> '2'): recorded per attempt, since a resumed run may change them."""
        flat: dict[str, str] = {}
        _flatten(self.model.model_dump(mode="json", include=MODEL_EXECUTION_FIELDS), "model", flat)
        _flatten(self.train.model_dump(mode="json", include=EXECUTION_FIELDS), "train", flat)
        return flat

    def variants(self) -> list[tuple[str, str]]:
        """(slot, variant name) of every registered variant the run uses."""
        return [(slot, getattr(self.model, slot).name) for slot in MODEL_SLOTS] + [("dataset", self.data.dataset.name)]

    def flat_params(self) -> dict[str, str]:
        """Every field the run key covers as `section.field` -> text: a run's MLflow params.
        Execution settings (:meth:`execution_settings`) may differ between attempts of one run,
        and MLflow never lets a param change, so they are not among them."""
        flat: dict[str, str] = {"seed": str(self.seed)}
        _flatten(self.model.model_dump(mode="json", exclude=MODEL_EXECUTION_FIELDS), "model", flat)
        _flatten(self.train.model_dump(mode="json", exclude=EXECUTION_FIELDS), "train", flat)
        _flatten(self.data.model_dump(mode="json"), "data", flat)
        _flatten(self.sources, "sources", flat)
        # a data URL may carry credentials: they are not a parameter
        return {key: redact(value) if "://" in value else value for key, value in flat.items()}


def _flatten(value, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}", out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
