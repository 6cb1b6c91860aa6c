"""Losses a model must beat: unigram and bigram cross-entropy of the validation split.

Both are estimated on the training split with add-one smoothing, in nats per token like
the model's loss, so a report can say how far a model is above a bigram table.
"""

from __future__ import annotations

import numpy as np


VAL_BLOCK = 1 << 20  # validation tokens scored at a time: memory bounded by the training head


def reference_losses(train: np.ndarray, val: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Unigram and bigram losses (nats per token) of `val` under add-one smoothed counts of
    `train` (1-D integer arrays). Memory: a few copies of `train` as int64, whatever `val`'s length."""
    train = np.asarray(train, dtype=np.int64)
    unigram_counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    log_unigram = np.log((unigram_counts + 1) / (unigram_counts.sum() + vocab_size))
    # bigram counts kept sparse: vocabularies of tiktoken size would not fit as a V x V table
    keys, counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    previous_counts = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
    del train
    unigram_sum = bigram_sum = 0.0
    for start in range(0, len(val), VAL_BLOCK):
        block = np.asarray(val[start: start + VAL_BLOCK + 1], dtype=np.int64)  # the next block's first token too
        unigram_sum -= log_unigram[block[:VAL_BLOCK]].sum()
        pairs = block[:-1] * vocab_size + block[1:]
        where = np.searchsorted(keys, pairs).clip(max=len(keys) - 1)
        pair_counts = np.where(keys[where] == pairs, counts[where], 0)
        bigram_sum -= np.log((pair_counts + 1) / (previous_counts[block[:-1]] + vocab_size)).sum()
    return {"unigram_loss": float(unigram_sum / max(len(val), 1)), "bigram_loss": float(bigram_sum / max(len(val) - 1, 1))}
