"""Data for a run: a registered dataset, tokenized, split, and served in batches.

    data:
      dataset: pydoc                     # or {name: text, path: corpus/*.txt}, addition, url, ...
      tokenizer: char                    # or {name: bpe, vocab_size: 1024}, tiktoken:gpt2
      val_fraction: 0.1
"""

from __future__ import annotations

import pydantic

from harness.data.cache import cache_dir
from harness.data.corpus import TokenizedCorpus
from harness.data.reference import reference_losses
from harness.data.tokenizers import Tokenizer, TokenizerConfig, build_tokenizer
from harness.model.config import VariantChoice, slot_field
from harness.registry import TextSource, lookup


class DataConfig(pydantic.BaseModel):
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


def load_dataset(cfg: DataConfig, tokenizer: Tokenizer | None = None):
    """The dataset `cfg` describes; a given tokenizer (from a checkpoint) replaces the configured one."""
    variant = lookup("dataset", cfg.dataset.name)
    cache = cache_dir()
    made = variant.factory(cfg, variant.parse_options(cfg.dataset.options), cache_dir=cache)
    if not isinstance(made, TextSource):
        return made
    split_at = int(len(made.text) * (1 - cfg.val_fraction))
    tokenizer = tokenizer or build_tokenizer(cfg.tokenizer, made.text, made.text[:split_at], cache)
    return TokenizedCorpus(made.text, tokenizer, cfg.val_fraction, cfg.val_windows, cache, made.metadata)


__all__ = ["DataConfig", "TokenizerConfig", "Tokenizer", "load_dataset", "reference_losses", "cache_dir"]
