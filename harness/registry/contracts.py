"""What a variant of each slot is given and must return.

Every factory is called as ``factory(model_config, options, **slot_arguments)``:

==========  ==========================================  =====================================
slot        slot arguments                              returns
==========  ==========================================  =====================================
norm        ``dim``                                     ``nn.Module``: x -> x, same shape
attention   ``layer: LayerInfo``                        ``nn.Module``: (x, ctx) -> x, calling
                                                        ``ctx.attend(q, k, v)`` for the kernel
mlp         ``layer: LayerInfo``                        ``nn.Module``: x -> x
placement   ``layer, attention, mlp, make_norm``        ``nn.Module``: (x, ctx) -> x; class
                                                        attribute ``final_norm`` (bool)
position    (none)                                      :class:`PositionEncoding`
init        (none)                                      :class:`Initializer`
dropout     (none)                                      :class:`DropoutSchedule`
dataset     ``cache_dir``                               :class:`TextSource` or
                                                        :class:`TextFiles` (a corpus, cut
                                                        into windows and tokenized by the
                                                        data config's tokenizer), or a
                                                        :class:`TaskDataset`
attention_  (none)                                      :class:`AttentionBackend`
backend
==========  ==========================================  =====================================

A dataset factory gets the data configuration instead of the model configuration.

What the engine relies on beyond the table:

- mlp: ``match: params`` gives every arm the baseline's non-embedding parameter count by
  setting the MLP variant's ``hidden_dim`` option (int, the explicit hidden width, which
  overrides any ratio). An MLP variant without a ``hidden_dim`` option cannot be matched;
  the study says so before it runs.
- attention_backend: a runtime choice, not part of the model: every backend computes the
  same function within rounding, so the backend is not part of a run's identity, and a call
  a backend cannot serve goes down a chain to one that can (the run records which ran).

An attention module exposes ``n_kv_heads`` and ``head_dim`` (the KV cache is sized from
them); a placement module keeps its attention module as ``.attention``.

Linear layers that write into the residual stream are marked with
:func:`mark_residual_output` so that initialisers can scale them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class LayerInfo:
    """Where a block sits in the stack, and the dropout rate its dropout variant chose."""

    index: int
    n_layer: int
    dropout: float


def mark_residual_output(linear: nn.Linear) -> nn.Linear:
    """Mark a projection whose output is added to the residual stream (attn out, MLP down)."""
    linear.writes_residual = True
    return linear


def writes_residual(module: nn.Module) -> bool:
    return getattr(module, "writes_residual", False)


class PositionEncoding(nn.Module):
    """Position hooks. Override the ones a scheme uses; the defaults add nothing.

    `positions` are absolute token positions (1-D, int64), so the same hooks serve a full
    forward pass and a step of cached generation.
    """

    #: True when :meth:`attention_bias` returns a tensor: the kernel must support a bias.
    needs_attention_bias = False

    def embed(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Added to the token embeddings, shape (T, d_model); or None."""
        return None

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """Applied to the new queries and keys (B, heads, T, head_dim) before caching."""
        return q, k

    def attention_bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """Added to the attention scores, shape (n_head, Tq, Tk); or None."""
        return None


class Initializer(Protocol):
    def __call__(self, model: nn.Module, targets: Iterator["InitTarget"]) -> None:
        """Initialise the parameters described by `targets`."""


@dataclass(frozen=True)
class InitTarget:
    """A parameter to initialise and what it is.

    role: "embedding" (token or learned position table), "linear" (a matmul weight),
    "residual_output" (a matmul weight writing the residual stream), "bias" (of a linear).
    layer: the block index, None outside the blocks.
    """

    parameter: nn.Parameter
    role: str
    layer: int | None


class DropoutSchedule(Protocol):
    embedding: float

    def rate(self, layer: int, n_layer: int) -> float:
        """Dropout probability of block `layer` (attention weights and residual branches)."""


class AttentionBackend:
    """An attention kernel: softmax(q k^T * scale + bias + causal mask) v for queries
    (B, H, Tq, D) and keys/values (B, H_kv, Tk, D), H a multiple of H_kv (grouped-query
    attention); with a KV cache the queries are the last Tq positions of the Tk keys.

    It must agree with the ``math`` backend within floating-point tolerance.
    """

    #: its place in the chain `attention_backend: auto` tries (lowest first); None: by name only
    auto_rank: int | None = None

    def __init__(self, cfg=None, options=None):
        pass

    def unavailable(self, q: torch.Tensor, bias: torch.Tensor | None, dropout_p: float) -> str | None:
        """Why this backend cannot serve such a call (no CUDA, no bias support, ...), or None."""
        return None

    def __call__(self, q, k, v, *, bias: torch.Tensor | None, causal: bool, dropout_p: float,
                 scale: float) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class TextSource:
    """A corpus given whole: its text, and where it came from (recorded on every run). For a
    corpus larger than memory, give its files (:class:`TextFiles`)."""

    text: str
    metadata: dict


@dataclass(frozen=True)
class TextFiles:
    """A corpus of UTF-8 text files of any size, joined in this order by a blank line ("\\n\\n"),
    and where it came from. The engine reads it in chunks (harness.data.text_stream): it is
    never held in memory whole."""

    paths: list
    metadata: dict


@dataclass(frozen=True)
class TextDocuments:
    """A corpus of documents (a Hugging Face dataset's text column), joined by a blank line:
    `train()` and `val()` yield them in batches (lists of str); `val` is None where the corpus
    ships no validation split (then the last val_fraction of train validates). `files` are what
    the documents are read from: their paths, sizes and modification times decide whether a
    cached scan still holds."""

    train: Callable[[], Iterator[list[str]]]
    val: Callable[[], Iterator[list[str]]] | None
    files: list
    metadata: dict


class TaskDataset(Protocol):
    """A synthetic task with its own vocabulary, batches and loss mask.

    Targets of -1 carry no loss. With ``exact_match`` True, evaluation also reports the
    share of validation rows whose every supervised token is predicted (greedy) exactly; with
    an optional ``decodes_text`` True (its tokens are text its tokenizer decodes), bits per byte
    (harness.training.evaluation).
    """

    vocab_size: int
    exact_match: bool
    metadata: dict
    tokenizer: object

    def check_context(self, context_length: int) -> None:
        """Raise ValueError when rows of this task do not fit in the context."""

    def train_batch(self, batch_size: int, context_length: int, generator: torch.Generator):
        """(x, y) int64 tensors of shape (batch_size, T <= context_length)."""

    def eval_batches(self, batch_size: int, context_length: int):
        """The validation rows, in batches of `batch_size`: the same rows at every call and
        whatever the batch size, so every arm and seed is judged on the same data."""
