"""A tokenized text: memory-mapped token arrays and a deterministic split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.cache import content_hash
from harness.data.tokenizers import Tokenizer
from harness.data.windows import TokenWindows
from harness.files import write_atomically


class TokenizedCorpus(TokenWindows):
    """Next-token prediction over windows of a text.

    The first (1 - val_fraction) of the text trains, the rest validates: no window spans
    both. Token arrays are cached as .npy files keyed by the text and tokenizer, and read
    back memory-mapped.
    """

    def __init__(self, text: str, tokenizer: Tokenizer, val_fraction: float, val_windows: int, cache: Path,
                 metadata: dict):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        split_at = int(len(text) * (1 - val_fraction))
        self.texts = {"train": text[:split_at], "val": text[split_at:]}
        tokens = {split: self._tokenize(part, cache, tokenizer.fingerprint()) for split, part in self.texts.items()}
        super().__init__([tokens["train"]], [tokens["val"]], val_windows)
        self.metadata = {**metadata, "train_tokens": len(tokens["train"]), "val_tokens": len(tokens["val"])}

    def _tokenize(self, text: str, cache: Path, tokenizer_key: str) -> np.ndarray:
        path = cache / "tokens" / f"{content_hash(text, tokenizer_key)}.npy"
        if not path.exists():
            dtype = np.uint16 if self.vocab_size <= 2 ** 16 else np.uint32
            tokens = np.asarray(self.tokenizer.encode(text), dtype=dtype)
            write_atomically(path, lambda private: _save_npy(private, tokens))
        return np.load(path, mmap_mode="r")


def _save_npy(path: Path, tokens: np.ndarray) -> None:
    with open(path, "wb") as file:  # np.save given a name would add ".npy" to it
        np.save(file, tokens, allow_pickle=False)
