"""Next-token windows drawn from token shards: what every token corpus serves a run.

A split is one or more 1-D integer arrays (memory maps: nothing is read until a window is
drawn). A window never spans two shards, and every start a shard can give is equally likely,
so one shard draws exactly as one array would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from harness.data.reference import reference_losses
from harness.errors import FileFault
from harness.files import write_text

# reference losses are estimated on at most this many tokens of each split: bounded memory
# (a few hundred MB of int64 counts) whatever the corpus's size
REFERENCE_TOKENS = 4_000_000


class TokenShards:
    """The shards of one split, in order; `len()` counts their tokens."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = [shard for shard in shards if len(shard)]
        self.lengths = np.array([len(shard) for shard in self.shards], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def head(self, count: int) -> np.ndarray:
        """The first `count` tokens (fewer if the split is shorter), as int64: a copy of `count` tokens."""
        parts, left = [], count
        for shard in self.shards:
            if left <= 0:
                break
            parts.append(np.asarray(shard[:left], dtype=np.int64))
            left -= len(parts[-1])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def starts(self, context_length: int) -> np.ndarray:
        """How many windows of `context_length` + 1 tokens each shard can start."""
        return np.maximum(self.lengths - context_length - 1, 0)

    def windows(self, positions: torch.Tensor, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (len(positions), context_length) int64: the windows at
        `positions`, numbered across shards in [0, starts(context_length).sum())."""
        ends = np.cumsum(self.starts(context_length))
        rows = []
        for position in positions.tolist():
            shard = int(np.searchsorted(ends, position, side="right"))
            offset = position - (int(ends[shard - 1]) if shard else 0)
            rows.append(self.shards[shard][offset: offset + context_length + 1])
        tokens = torch.from_numpy(np.stack(rows).astype(np.int64))
        return tokens[:, :-1], tokens[:, 1:]


class TokenWindows:
    """Next-token prediction over the windows of a train and a validation split (the base of
    text corpora and token files). Validation windows are fixed by the split, the context
    length and one seed: every arm and seed is judged on the same tokens, whatever its batch size."""

    exact_match = False
    decodes_text = True  # its tokenizer decodes the tokens to the text they came from: bits per byte apply

    def __init__(self, train: list[np.ndarray], val: list[np.ndarray], val_windows: int,
                 references: Path | None = None, split_by_fraction: bool = False):
        self.tokens = {"train": TokenShards(train), "val": TokenShards(val)}
        self.val_windows = val_windows
        self.references = references  # where the reference losses of these tokens are kept
        self.split_by_fraction = split_by_fraction  # data.val_fraction cut the splits (else the corpus ships them)

    def check_context(self, context_length: int) -> None:
        for split, tokens in self.tokens.items():
            if not tokens.starts(context_length).any():
                longest = int(tokens.lengths.max()) if len(tokens.lengths) else 0
                raise ValueError(
                    f"the {split} split has {'no shard longer than ' if len(tokens.lengths) > 1 else ''}{longest} "
                    f"tokens, fewer than context_length + 2 ({context_length + 2}); use a larger corpus"
                    + (", a smaller context or another val_fraction" if self.split_by_fraction else
                       " or a smaller context"))

    def train_batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        tokens = self.tokens["train"]
        high = int(tokens.starts(context_length).sum())
        return self._in_vocabulary(tokens.windows(torch.randint(high, (batch_size,), generator=generator),
                                                  context_length), "train")

    def eval_batches(self, batch_size: int, context_length: int):
        tokens = self.tokens["val"]
        high = int(tokens.starts(context_length).sum())
        starts = torch.randint(high, (self.val_windows,), generator=torch.Generator().manual_seed(0))
        return [self._in_vocabulary(tokens.windows(chunk, context_length), "val") for chunk in starts.split(batch_size)]

    def _in_vocabulary(self, batch: tuple[torch.Tensor, torch.Tensor], split: str):
        """`batch`, after checking its ids against the vocabulary (a few microseconds a batch).
        Token files are checked once, then trusted while their size and modification time stay
        the same; one damaged since then in place would otherwise index outside the embedding.
        Raises FileFault naming the split's files."""
        inputs, targets = batch
        vocab_size = getattr(self, "vocab_size", None)
        if vocab_size is not None and len(targets) and (
                int(targets.max()) >= vocab_size or int(targets.min()) < 0 or int(inputs[:, 0].max()) >= vocab_size
                or int(inputs[:, 0].min()) < 0):
            files = sorted({str(getattr(shard, "filename", "")) for shard in self.tokens[split].shards} - {""})
            raise FileFault(f"the {split} tokens ({', '.join(files[:3]) or 'in memory'}) hold ids outside the "
                            f"vocabulary of {vocab_size}: the files were damaged after they were checked; run again "
                            "with ABLATE_VERIFY_DATA=1 to check (and prepare) them again")
        return batch

    def reference_losses(self) -> dict[str, float]:
        """Unigram and bigram losses of the validation split (harness.data.reference), from at
        most REFERENCE_TOKENS tokens of each split; computed once per token files and kept
        beside them (`references`) where they may be written."""
        if self.references is not None and self.references.exists():
            try:
                kept = json.loads(self.references.read_text(encoding="utf-8"))
                if set(kept) == {"unigram_loss", "bigram_loss"} and all(type(v) is float for v in kept.values()):
                    return kept
            except (ValueError, OSError, TypeError):
                pass  # damaged: computed again
        losses = reference_losses(self.tokens["train"].head(REFERENCE_TOKENS),
                                  self.tokens["val"].head(REFERENCE_TOKENS), self.vocab_size)
        if self.references is not None:
            try:
                write_text(self.references, json.dumps(losses))
            except FileFault:
                pass  # a read-only cache: computed again next time
        return losses
