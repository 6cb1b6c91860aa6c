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

from harness.registry import MODEL_SLOTS, SLOTS, Options, lookup, variants
from harness.settings import Settings


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


def slot_json_schema(slot: str, default: str):
    """The JSON Schema of a field holding a variant of `slot`, as users write it: a name, or a
    mapping with the name and the variant's options. It lists the variants registered when
    the schema is made (`ablate schema --plugin ...` adds a plugin's)."""

    def extra(schema: dict) -> None:
        names = [variant.name for variant in variants(slot)]
        for key in ("$ref", "anyOf", "type", "properties", "required"):
            schema.pop(key, None)
        schema["anyOf"] = [
            {"type": "string", "enum": names},
            {"type": "object", "properties": {"name": {"type": "string", "enum": names}}, "required": ["name"],
             "additionalProperties": True, "description": f"a {slot} variant with its options"},
        ]
        schema["default"] = default

    return extra


def slot_field(slot: str, default: str):
    return Field(VariantChoice(name=default), description=SLOTS[slot], json_schema_extra=slot_json_schema(slot, default))


KernelChoice = Literal["torch", "triton"]


class KernelConfig(Settings):
    """Which implementation computes each fusable op: torch's, or our Triton kernel.

    A choice of speed, not of model: both give the same numbers within rounding. A Triton
    kernel that cannot run on the device falls back to torch, and the run records it.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    rmsnorm: KernelChoice = Field("torch", description="the rmsnorm norm variant")
    swiglu: KernelChoice = Field("torch", description="the swiglu MLP's activation")


MOST_PARAMETERS = 1e12  # about 12 * n_layer * d_model^2 in the blocks, plus the embedding tables


class ModelConfig(Settings):
    """A GPT: sizes and switches, and the variant chosen for each slot."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    vocab_size: int | None = Field(
        None, gt=0, description="rows of the token embedding and the LM head; default: the tokenizer's vocabulary. "
                                "A larger value pads it (GPT-2's 50257 tokens as 50304, a multiple of 64, runs faster "
                                "on GPUs); the padding rows are never a target")
    context_length: int = Field(128, gt=0, description="longest sequence the model sees")
    n_layer: int = Field(4, gt=0, le=1_000, description="number of blocks (depth; DeepNet trained 1,000)")
    n_head: int = Field(4, gt=0, description="query heads per attention layer")
    d_model: int = Field(128, gt=0, description="residual stream width")
    bias: bool = Field(True, description="biases in linear layers and norms")
    tie_embeddings: bool = Field(True, description="LM head shares the token embedding's weights")
    gradient_checkpointing: bool = Field(False, description="recompute blocks in backward to save memory")
    attention_backend: str = Field("auto", description="attention kernel: auto (flash_attn, sdpa, math: the first "
                                                        "that can serve), or a registered backend by name")
    kernels: KernelConfig = Field(KernelConfig(), description="torch or Triton per fusable op")

    # the default block is GPT-2's
    norm: VariantChoice = slot_field("norm", "layernorm")
    placement: VariantChoice = slot_field("placement", "pre")
    attention: VariantChoice = slot_field("attention", "mha")
    mlp: VariantChoice = slot_field("mlp", "gelu")
    position: VariantChoice = slot_field("position", "learned")
    init: VariantChoice = slot_field("init", "gpt2")
    dropout: VariantChoice = slot_field("dropout", "constant")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @pydantic.model_validator(mode="after")
    def _check_shapes_and_variants(self) -> "ModelConfig":
        # refused before anything is built: a typo of a few zeros would keep even a dry run busy for hours
        blocks = 12 * self.n_layer * self.d_model ** 2
        tables = ((self.vocab_size or 0) + self.context_length) * self.d_model  # embeddings, at most
        if blocks + tables > MOST_PARAMETERS:
            raise ValueError(f"n_layer {self.n_layer}, d_model {self.d_model}, vocab_size {self.vocab_size} and "
                             f"context_length {self.context_length} make about {blocks + tables:.1e} parameters, "
                             f"more than {MOST_PARAMETERS:.0e}; check the sizes")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.attention_backend != "auto":
            lookup("attention_backend", self.attention_backend)
        for slot in MODEL_SLOTS:
            choice: VariantChoice = getattr(self, slot)
            variant = lookup(slot, choice.name)
            options = variant.parse_options(choice.options)
            options.check_model(self)
            # store the options with every default filled in: the config now says everything
            object.__setattr__(self, slot, VariantChoice(name=choice.name, options=options.model_dump()))
        return self

    def for_vocabulary(self, tokens: int) -> "ModelConfig":
        """This config for a tokenizer of `tokens` tokens: its vocabulary, or the padded one
        this config asks for (never fewer rows than tokens)."""
        if self.vocab_size is None:
            return self.model_copy(update={"vocab_size": tokens})
        if self.vocab_size < tokens:
            raise ValueError(f"model.vocab_size ({self.vocab_size}) is smaller than the tokenizer's {tokens} tokens; "
                             "leave it unset to use the tokenizer's, or pad it above")
        return self

    def options(self, slot: str) -> Options:
        """The validated options object of the variant chosen for `slot`."""
        choice: VariantChoice = getattr(self, slot)
        return lookup(slot, choice.name).parse_options(choice.options)

    def describe(self) -> str:
        sizes = f"{self.n_layer}x{self.d_model}, {self.n_head} heads, context {self.context_length}"
        return sizes + ", " + ", ".join(f"{slot}={getattr(self, slot)}" for slot in MODEL_SLOTS)
