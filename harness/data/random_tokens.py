"""Uniformly random tokens: for throughput benchmarks at a real vocabulary size.

Nothing can be learned from it (the loss stays at ln(vocab_size)); it exists so that a
model of GPT-2's shape, vocabulary included, can be timed through the same trainer as a
study without a tokenizer or a corpus.
"""

from __future__ import annotations

import torch
from pydantic import Field

from harness.data.tokenizers import char_tokenizer
from harness.registry import Options, register


class RandomTokensOptions(Options):
    vocab_size: int = Field(50304, gt=1, le=0xD800 - 0x100, description="token ids drawn from [0, vocab_size)")


@register("dataset", "random", RandomTokensOptions)
class RandomTokens:
    """Uniform random token ids; validation uses a fixed generator."""

    exact_match = False

    def __init__(self, cfg, options: RandomTokensOptions, cache_dir=None):
        self.vocab_size = options.vocab_size
        self.val_windows = cfg.val_windows
        # one character per id, below the UTF-16 surrogates, so samples and checkpoints work
        self.tokenizer = char_tokenizer("".join(chr(0x100 + i) for i in range(self.vocab_size)))
        self.metadata = {"source": "uniform random tokens", "vocab_size": self.vocab_size}

    def check_context(self, context_length: int) -> None:
        pass

    def _batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        rows = torch.randint(self.vocab_size, (batch_size, context_length + 1), generator=generator)
        return rows[:, :-1], rows[:, 1:]

    def train_batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        return self._batch(batch_size, context_length, generator)

    def eval_batches(self, batch_size: int, context_length: int):
        x, y = self._batch(self.val_windows, context_length, torch.Generator().manual_seed(0))
        return list(zip(x.split(batch_size), y.split(batch_size)))
