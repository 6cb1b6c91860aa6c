"""Synthetic integer addition: `a+b=` followed by the digits of the sum, reversed."""

from __future__ import annotations

import hashlib

import torch
from pydantic import Field

from harness.data.tokenizers import char_tokenizer
from harness.errors import AblateError
from harness.registry import Options, register

VOCABULARY = "0123456789+=\n"


class AdditionOptions(Options):
    digits: int = Field(2, ge=1, le=9, description="digits of each operand")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of all operand pairs held out")
    val_examples: int = Field(1000, gt=0, description="validation rows scored at each evaluation")


@register("dataset", "addition", AdditionOptions)
class AdditionTask:
    """Integer addition (as in nanoGPT's and others' arithmetic probes): rows like
    `07+45=250` (52 reversed, padded to digits + 1).

    Reversing the sum lets the model emit the carry in the order it computes it. Loss is
    taken only on the answer tokens; evaluation reports exact-match accuracy on held-out
    operand pairs.
    """

    exact_match = True

    def __init__(self, cfg, options: AdditionOptions, cache_dir=None):
        self.digits = options.digits
        self.tokenizer = char_tokenizer(VOCABULARY)
        self.vocab_size = self.tokenizer.vocab_size
        self.row_length = 3 * self.digits + 4  # a + b = sum(digits + 1) \n
        self.answer_start = 2 * self.digits + 2
        self.val_fraction = options.val_fraction
        self.val_examples = options.val_examples
        self.metadata = {"source": "synthetic addition", "digits": self.digits, "val_fraction": self.val_fraction}
        self._check_both_splits()

    def _check_both_splits(self) -> None:
        # sampling draws until it has enough pairs of a split: a split with none would never end
        if self.digits > 3:
            return  # millions of pairs: both splits have plenty
        a, b = torch.cartesian_prod(torch.arange(10 ** self.digits), torch.arange(10 ** self.digits)).unbind(1)
        held_out = int(self._is_val(a, b).sum())
        if held_out == 0 or held_out == a.numel():
            raise AblateError(f"addition with {self.digits} digit(s) has {a.numel()} operand pairs, and val_fraction "
                              f"{self.val_fraction} leaves {'none' if held_out == 0 else 'all'} of them for "
                              "validation; use more digits or another val_fraction")

    def _is_val(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a fixed pseudo-random share of operand pairs, the same in every run and process
        mixed = (a * 1_000_003 + b * 998_244_353 + 12345) % 1_000_000_007
        return (mixed % 10_000) < int(self.val_fraction * 10_000)

    def _rows(self, a: torch.Tensor, b: torch.Tensor):
        n = self.digits
        text = [f"{x:0{n}d}+{y:0{n}d}={str(x + y).zfill(n + 1)[::-1]}\n" for x, y in zip(a.tolist(), b.tolist())]
        rows = torch.tensor([self.tokenizer.encode(t) for t in text], dtype=torch.long)
        x, y = rows[:, :-1], rows[:, 1:].clone()
        y[:, : self.answer_start - 1] = -1  # only the answer (and the closing newline) is learned
        return x, y

    def check_context(self, context_length: int) -> None:
        if context_length < self.row_length - 1:
            raise ValueError(f"addition with {self.digits} digits needs context_length >= {self.row_length - 1}")

    def _sample(self, count: int, generator: torch.Generator, want_val: bool):
        a_parts, b_parts, have = [], [], 0
        while have < count:
            a = torch.randint(10 ** self.digits, (2 * count,), generator=generator)
            b = torch.randint(10 ** self.digits, (2 * count,), generator=generator)
            keep = self._is_val(a, b) == want_val
            a_parts.append(a[keep])
            b_parts.append(b[keep])
            have += int(keep.sum())
        return torch.cat(a_parts)[:count], torch.cat(b_parts)[:count]

    def train_batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        return self._rows(*self._sample(batch_size, generator, want_val=False))

    def eval_batches(self, batch_size: int, context_length: int):
        seed = int(hashlib.sha256(f"addition-{self.digits}".encode()).hexdigest()[:8], 16)
        a, b = self._sample(self.val_examples, torch.Generator().manual_seed(seed), want_val=True)
        x, y = self._rows(a, b)
        return list(zip(x.split(batch_size), y.split(batch_size)))
