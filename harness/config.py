"""The model configuration: sizes, switches, and one variant per slot.

A slot is written as a name (``mlp: swiglu``) or a name with options
(``mlp: {name: swiglu, hidden_ratio: 4}``). Validation resolves every slot against the
registry and fills in each variant's default options, so a validated config describes the
model completely (and hashes the same however it was written).
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from harness.registry import MODEL_SLOTS, Options, lookup


class VariantChoice(pydantic.BaseModel):
    """A variant of one slot with its resolved options."""

    model_config = pydantic.ConfigDict(frozen=True)

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_name_or_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "options": {}}
        if isinstance(value, dict) and "options" not in value:
            if "name" not in value:
                raise ValueError("give a variant name, or a mapping with 'name' and its options")
            return {"name": value["name"], "options": {k: v for k, v in value.items() if k != "name"}}
        return value

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.options.items()) + ")"


KernelChoice = Literal["torch", "triton"]


class KernelConfig(pydantic.BaseModel):
    """Which implementation computes each fusable op: torch's, or our Triton kernel.

    A choice of speed, not of model: both give the same numbers within rounding. A Triton
    kernel that cannot run on the device falls back to torch, and the run records it.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    rmsnorm: KernelChoice = Field("torch", description="the rmsnorm norm variant")
    swiglu: KernelChoice = Field("torch", description="the swiglu MLP's activation")


class ModelConfig(pydantic.BaseModel):
    """A GPT: sizes and switches, and the variant chosen for each slot."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(256, gt=0, description="tokens in the vocabulary")
    context_length: int = Field(128, gt=0, description="longest sequence the model sees")
    n_layer: int = Field(4, gt=0, description="number of blocks (depth)")
    n_head: int = Field(4, gt=0, description="query heads per attention layer")
    d_model: int = Field(128, gt=0, description="residual stream width")
    bias: bool = Field(True, description="biases in linear layers and norms")
    tie_embeddings: bool = Field(True, description="LM head shares the token embedding's weights")
    gradient_checkpointing: bool = Field(False, description="recompute blocks in backward to save memory")
    attention_backend: str = Field("auto", description="kernel: auto, math, sdpa, flash_attn, triton, ...")
    kernels: KernelConfig = Field(KernelConfig(), description="torch or Triton per fusable op")

    norm: VariantChoice = VariantChoice(name="layernorm")
    placement: VariantChoice = VariantChoice(name="pre")
    attention: VariantChoice = VariantChoice(name="mha")
    mlp: VariantChoice = VariantChoice(name="gelu")
    position: VariantChoice = VariantChoice(name="learned")
    init: VariantChoice = VariantChoice(name="gpt2")
    dropout: VariantChoice = VariantChoice(name="constant")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @pydantic.model_validator(mode="after")
    def _check_shapes_and_variants(self) -> "ModelConfig":
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        from harness.attention_backends import check_backend_name

        check_backend_name(self.attention_backend)
        for slot in MODEL_SLOTS:
            choice: VariantChoice = getattr(self, slot)
            variant = lookup(slot, choice.name)
            options = variant.parse_options(choice.options)
            options.check_model(self)
            # store the options with every default filled in: the config now says everything
            object.__setattr__(self, slot, VariantChoice(name=choice.name, options=options.model_dump()))
        return self

    def options(self, slot: str) -> Options:
        """The validated options object of the variant chosen for `slot`."""
        choice: VariantChoice = getattr(self, slot)
        return lookup(slot, choice.name).parse_options(choice.options)

    def describe(self) -> str:
        sizes = f"{self.n_layer}x{self.d_model}, {self.n_head} heads, context {self.context_length}"
        return sizes + ", " + ", ".join(f"{slot}={getattr(self, slot)}" for slot in MODEL_SLOTS)
