"""A tokenized corpus: memory-mapped token arrays, a deterministic split, random windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.data.cache import content_hash
from harness.files import write_atomically
from harness.data.tokenizers import Tokenizer


class TokenizedCorpus:
    """Next-token prediction over windows of a text.

    The first (1 - val_fraction) of the text trains, the rest validates: no window spans
    both. Token arrays are cached as .npy files keyed by the text and tokenizer, and read
    back memory-mapped.
    """

    exact_match = False

    def __init__(self, text: str, tokenizer: Tokenizer, val_fraction: float, val_windows: int, cache: Path,
                 metadata: dict):
        self.tokenizer = tokenizer
        self.val_windows = val_windows
        self.vocab_size = tokenizer.vocab_size
        split_at = int(len(text) * (1 - val_fraction))
        self.texts = {"train": text[:split_at], "val": text[split_at:]}
        self.tokens = {split: self._tokenize(part, cache, tokenizer.fingerprint()) for split, part in self.texts.items()}
        self.metadata = {**metadata, "train_tokens": len(self.tokens["train"]), "val_tokens": len(self.tokens["val"])}

    def _tokenize(self, text: str, cache: Path, tokenizer_key: str) -> np.ndarray:
        path = cache / "tokens" / f"{content_hash(text, tokenizer_key)}.npy"
        if not path.exists():
            dtype = np.uint16 if self.vocab_size <= 2 ** 16 else np.uint32
            tokens = np.asarray(self.tokenizer.encode(text), dtype=dtype)
            write_atomically(path, lambda private: _save_npy(private, tokens))
        return np.load(path, mmap_mode="r")

    def check_context(self, context_length: int) -> None:
        for split, tokens in self.tokens.items():
            if len(tokens) <= context_length + 1:
                raise ValueError(
                    f"the {split} split has {len(tokens)} tokens, fewer than context_length + 2 "
                    f"({context_length + 2}); use a larger corpus, a smaller context or another val_fraction")

    def _windows(self, split: str, starts: torch.Tensor, context_length: int):
        tokens = self.tokens[split]
        rows = np.stack([tokens[s: s + context_length + 1] for s in starts.tolist()]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def train_batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        high = len(self.tokens["train"]) - context_length - 1
        return self._windows("train", torch.randint(high, (batch_size,), generator=generator), context_length)

    def eval_batches(self, batch_size: int, context_length: int):
        # the same windows for every arm and seed, whatever their batch size: fixed by the
        # text, the context length and one seed, so differences are never sampling noise
        high = len(self.tokens["val"]) - context_length - 1
        starts = torch.randint(high, (self.val_windows,), generator=torch.Generator().manual_seed(0))
        return [self._windows("val", chunk, context_length) for chunk in starts.split(batch_size)]


def _save_npy(path: Path, tokens: np.ndarray) -> None:
    with open(path, "wb") as file:  # np.save given a name would add ".npy" to it
        np.save(file, tokens, allow_pickle=False)
