"""Losses a model must beat: unigram and bigram cross-entropy of the validation split.

Both are estimated on the training split with add-one smoothing, in nats per token like
the model's loss, so a report can say how far a model is above a bigram table.
"""

from __future__ import annotations

import numpy as np


def reference_losses(train: np.ndarray, val: np.ndarray, vocab_size: int) -> dict[str, float]:
    train = np.asarray(train, dtype=np.int64)
    val = np.asarray(val, dtype=np.int64)
    unigram_counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    unigram = (unigram_counts + 1) / (unigram_counts.sum() + vocab_size)
    unigram_loss = -np.log(unigram[val]).mean()

    # bigram counts kept sparse: vocabularies of tiktoken size would not fit as a V x V table
    pairs = train[:-1] * vocab_size + train[1:]
    keys, counts = np.unique(pairs, return_counts=True)
    previous_counts = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
    val_pairs = val[:-1] * vocab_size + val[1:]
    where = np.searchsorted(keys, val_pairs).clip(max=len(keys) - 1)
    pair_counts = np.where(keys[where] == val_pairs, counts[where], 0)
    bigram = (pair_counts + 1) / (previous_counts[val[:-1]] + vocab_size)
    return {"unigram_loss": float(unigram_loss), "bigram_loss": float(-np.log(bigram).mean())}
