"""Training settings of a run."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from harness.settings import Settings


class LoraConfig(Settings):
    """Low-rank adapters (Hu et al. 2021) on the chosen linear layers of every block; the rest of
    the model is frozen. W + (alpha / rank) B A, with B zero at the start."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, gt=0, le=4096, description="rank r of each adapter")
    alpha: float = Field(16.0, gt=0, description="scale: the update is alpha / rank x B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    targets: list[Literal["attention", "mlp"]] = Field(
        ["attention", "mlp"], min_length=1, description="which linear layers of each block get adapters")


class StudyRun(Settings):
    """The final checkpoint of another study's run, e.g. `{study: addition_pretrain, arm: base,
    seed: same}`: with `seed: same`, each seed starts from the run of the same seed."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    study: str = Field(min_length=1, max_length=100, description="the other study's name")
    arm: str = Field("base", min_length=1, description="its arm")
    seed: int | Literal["same"] = Field("same", description="its seed, or `same`: the seed of the run it starts")


class TrainConfig(Settings):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(400, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate / peak")
    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0 to lr")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of matmul weights (not norms, biases, embeddings)")
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.95, gt=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables")
    eval_interval: int = Field(50, gt=0, description="steps between validation passes")
    log_interval: int = Field(10, gt=0, description="steps between training-loss records")
    checkpoint_interval: int | None = Field(
        None, ge=0, description="steps between checkpoints; none = at every evaluation, 0 = only at the end")
    divergence_factor: float = Field(3.0, gt=1, description="stop when the loss exceeds this times its start")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="autocast dtype; auto = bf16 on CUDA")
    compile: bool | None = Field(None, description="torch.compile; default on for CUDA")
    fused: bool | None = Field(None, description="fused AdamW kernel; default on for CUDA")
    tf32: bool = Field(True, description="TF32 tensor cores for fp32 matmuls on CUDA")
    threads: int | None = Field(
        None, gt=0, description="CPU threads of this run's process; default PyTorch's (one per core), or the "
                                "process's share of the cores when several workers share a machine")
    init_from: str | StudyRun | None = Field(
        None, description="where the weights start: an ablate checkpoint's path, hf:<model id or folder> (a Hugging "
                          "Face GPT-2 or Llama model, its architecture and tokenizer with it), or another study's "
                          "run {study, arm, seed}; default: random initialisation")
    lora: LoraConfig | None = Field(None, description="train low-rank adapters on a frozen model instead of every weight")

    @pydantic.model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self
