"""Data for a run (configured by harness.config.data): a registered dataset, tokenized,
split, and served in batches."""

from __future__ import annotations

from harness.config.data import DataConfig
from harness.data.cache import cache_dir
from harness.data.corpus import TokenizedCorpus
from harness.data.reference import reference_losses
from harness.data.tokenizers import Tokenizer, build_tokenizer
from harness.registry import TextSource, lookup


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


__all__ = ["Tokenizer", "load_dataset", "reference_losses", "cache_dir"]
