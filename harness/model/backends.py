"""The built-in attention backends, registered like variants (slot ``attention_backend``).

Each computes softmax(q k^T * scale + bias + causal mask) v and must agree with ``math``
within floating-point tolerance; ``auto`` tries flash-attn, then SDPA, then math. Our Triton
kernel is chosen by name only: on a GPU the first two are faster. A plugin adds a backend the
same way (:class:`harness.registry.AttentionBackend`).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from harness.registry import AttentionBackend, register


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """True where query i may see key j; queries are the last `q_len` of the `k_len` keys."""
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device)[:, None]
    cols = torch.arange(k_len, device=device)[None, :]
    return cols <= rows + offset


@register("attention_backend", "math")
class MathAttention(AttentionBackend):
    """Explicit reference: scores, mask, softmax in fp32, weighted values."""

    auto_rank = 2

    def __call__(self, q, k, v, *, bias, causal, dropout_p, scale):
        groups = q.size(1) // k.size(1)
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) * scale
        if bias is not None:
            scores = scores + bias
        if causal:
            scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if dropout_p > 0.0:
            probs = F.dropout(probs, dropout_p)
        return probs @ v


@register("attention_backend", "sdpa")
class SDPAttention(AttentionBackend):
    """torch's scaled_dot_product_attention (its flash or memory-efficient kernel when it can)."""

    auto_rank = 1

    def __call__(self, q, k, v, *, bias, causal, dropout_p, scale):
        q_len, k_len = q.size(-2), k.size(-2)
        mask, is_causal = bias, False
        if causal and bias is None and q_len == k_len:
            is_causal = True  # lets SDPA pick its flash / memory-efficient kernels
        elif causal and q_len > 1:
            allowed = causal_mask(q_len, k_len, q.device)
            mask = allowed if bias is None else bias.masked_fill(~allowed, float("-inf"))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=q.size(1) != k.size(1),
        )


@register("attention_backend", "flash_attn")
class FlashAttention2(AttentionBackend):
    """flash-attn 2 (Dao 2023): CUDA, fp16/bf16, no attention bias."""

    auto_rank = 0

    def unavailable(self, q, bias, dropout_p):
        if importlib.util.find_spec("flash_attn") is None:
            return "flash-attn is not installed (pip install 'ablate[gpu]')"
        if not q.is_cuda:
            return "flash-attn needs CUDA"
        if q.dtype not in (torch.float16, torch.bfloat16):
            return f"flash-attn needs fp16/bf16, got {q.dtype}"
        if bias is not None:
            return "flash-attn takes no additive attention bias"
        return None

    def __call__(self, q, k, v, *, bias, causal, dropout_p, scale):
        from flash_attn import flash_attn_func

        # flash-attn wants (B, T, H, D); its causal mask is aligned bottom-right like ours
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              dropout_p=dropout_p, softmax_scale=scale, causal=causal)
        return out.transpose(1, 2)


@register("attention_backend", "triton")
class TritonFlashAttention(AttentionBackend):
    """ablate's Triton flash attention (harness/kernels): causal, GQA, no bias or dropout."""

    def unavailable(self, q, bias, dropout_p):
        from harness.kernels import triton_unavailable

        if reason := triton_unavailable(q.device):
            return reason
        if bias is not None:
            return "our Triton attention takes no additive attention bias"
        if dropout_p > 0.0:
            return "our Triton attention has no attention dropout"
        if q.size(-1) > 256:
            return f"our Triton attention takes head_dim up to 256, got {q.size(-1)}"
        return None

    def __call__(self, q, k, v, *, bias, causal, dropout_p, scale):
        from harness.kernels.flash_attention import flash_attention

        return flash_attention(q, k, v, scale, causal)
