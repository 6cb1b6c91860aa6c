"""Attention projections: multi-head, multi-query and grouped-query, one mechanism.

MHA, MQA and GQA differ only in how many key/value heads the query heads share, so they
are one module with ``n_kv_heads`` (litgpt's ``n_query_groups``), registered three times.
The kernel, positions and KV cache are applied by ``ctx.attend``.
"""

from pydantic import Field
from torch import nn

from harness.registry import Options, mark_residual_output, register


class GroupedQueryAttention(nn.Module):
    def __init__(self, cfg, n_kv_heads: int, layer):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_heads = n_kv_heads
        self.head_dim = cfg.head_dim
        self.dropout = layer.dropout
        # one matmul for queries, keys and values; keys/values are n_kv_heads wide
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_head + 2 * n_kv_heads) * cfg.head_dim, bias=cfg.bias)
        self.out = mark_residual_output(nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=cfg.bias))

    def forward(self, x, ctx):
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim], dim=-1)
        q = q.view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        y = ctx.attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, self.n_head * self.head_dim))


@register("attention", "mha")
def multi_head(cfg, options, layer):
    """Multi-head attention (Vaswani et al. 2017): every query head has its own keys and values."""
    return GroupedQueryAttention(cfg, cfg.n_head, layer)


@register("attention", "mqa")
def multi_query(cfg, options, layer):
    """Multi-query attention (Shazeer 2019): all query heads share one key/value head.

    The KV cache shrinks by a factor of n_head; so do the key/value projections.
    """
    return GroupedQueryAttention(cfg, 1, layer)


class GroupedQueryOptions(Options):
    n_kv_heads: int = Field(gt=0, description="key/value heads; must divide n_head")

    def check_model(self, model) -> None:
        if model.n_head % self.n_kv_heads:
            raise ValueError(
                f"attention 'gqa': n_head ({model.n_head}) must be divisible by n_kv_heads ({self.n_kv_heads})")


@register("attention", "gqa", GroupedQueryOptions)
def grouped_query(cfg, options: GroupedQueryOptions, layer):
    """Grouped-query attention (Ainslie et al. 2023): groups of query heads share key/value heads.

    n_kv_heads = n_head is MHA, n_kv_heads = 1 is MQA; in between trades quality for cache size.
    """
    return GroupedQueryAttention(cfg, options.n_kv_heads, layer)
