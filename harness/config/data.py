"""What a run trains on: a registered dataset, its tokenizer and its validation split.

    data:
      dataset: pydoc                     # or {name: text, path: corpus/*.txt}, addition, url, ...
      tokenizer: char                    # or {name: bpe, vocab_size: 1024}, tiktoken:gpt2, hf:tokenizer.json
      val_fraction: 0.1
"""

from __future__ import annotations

from typing import Literal

import pydantic

from harness.config.model import VariantChoice, slot_field
from harness.registry import lookup
from harness.settings import Settings


class TokenizerConfig(Settings):
    """`char`, `{name: bpe, vocab_size: N}`, `tiktoken:<encoding>`, or `hf:<path>` (a Hugging
    Face tokenizer.json, or the folder of a model that holds one)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: Literal["char", "bpe", "tiktoken", "hf"] = "char"
    vocab_size: int = pydantic.Field(1024, ge=257, description="bpe: size of the trained vocabulary")
    encoding: str | None = pydantic.Field(None, description="tiktoken: name of the encoding")
    path: str | None = pydantic.Field(None, description="hf: a tokenizer.json, or a folder holding one")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        if isinstance(value, str):
            if value.startswith("tiktoken:"):
                return {"name": "tiktoken", "encoding": value.split(":", 1)[1]}
            if value.startswith("hf:"):
                return {"name": "hf", "path": value.split(":", 1)[1]}
            return {"name": value}
        return value

    @staticmethod
    def as_written(schema: dict) -> None:
        """JSON Schema of the field as users write it: also a string."""
        reference = schema.pop("$ref")
        schema["anyOf"] = [{"type": "string", "description": "char, bpe, tiktoken:<encoding> or hf:<path>"},
                           {"$ref": reference}]
        schema["default"] = "char"

    @pydantic.model_validator(mode="after")
    def _encoding_given(self):
        if self.name == "tiktoken" and not self.encoding:
            raise ValueError("tokenizer 'tiktoken' needs an encoding, e.g. tiktoken:gpt2")
        if self.name == "hf" and not self.path:
            raise ValueError("tokenizer 'hf' needs a path, e.g. hf:gpt2/tokenizer.json")
        return self



class DataConfig(Settings):
    # for editors: the dataset's own options may stand beside its name (`dataset: addition, digits: 2`)
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, json_schema_extra={"additionalProperties": True})

    dataset: VariantChoice = slot_field("dataset", "pydoc")
    tokenizer: TokenizerConfig = pydantic.Field(TokenizerConfig(), json_schema_extra=TokenizerConfig.as_written)
    val_fraction: float = pydantic.Field(0.1, gt=0, lt=1, description="tail of a corpus kept for validation")
    val_windows: int = pydantic.Field(
        128, gt=0, description="validation windows of a corpus (context_length tokens each), drawn once from the "
                               "validation split with a fixed seed: every arm and seed is judged on the same text, "
                               "whatever its batch size")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _flat_dataset_options(cls, values):
        # `data: {dataset: addition, digits: 2}`, as people write it, means
        # `data: {dataset: {name: addition, digits: 2}}`: a key that is no field of data is an option
        # of the dataset named beside it
        if isinstance(values, dict) and isinstance(values.get("dataset"), str):
            options = {k: v for k, v in values.items() if k not in cls.model_fields}
            if options:
                kept = {k: v for k, v in values.items() if k in cls.model_fields}
                return {**kept, "dataset": {"name": values["dataset"], **options}}
        return values

    @pydantic.model_validator(mode="after")
    def _resolve_dataset(self):
        variant = lookup("dataset", self.dataset.name)
        options = variant.parse_options(self.dataset.options)
        object.__setattr__(self, "dataset", VariantChoice(name=self.dataset.name, options=options.model_dump()))
        return self
