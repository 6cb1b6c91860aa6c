"""Attention kernels: interchangeable runtime backends, not variants.

Every backend computes softmax(q k^T * scale + bias + causal mask) v for queries
(B, H, Tq, D) and keys/values (B, H_kv, Tk, D) with H a multiple of H_kv (grouped-query
attention), and must agree with ``math`` within floating-point tolerance. A backend that
cannot serve a call (no CUDA, no bias support, wrong dtype) says why, and the next one in
the chain serves it; the choice is recorded so a run can report what actually ran.
"""

from __future__ import annotations

import importlib.util
import math as _math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from harness.errors import AblateError


@dataclass(frozen=True)
class AttentionBackend:
    name: str
    kernel: Callable[..., torch.Tensor]
    #: (q, bias, dropout_p) -> why it cannot serve this call, or None when it can
    unavailable: Callable[[torch.Tensor, torch.Tensor | None, float], str | None]
    description: str


_BACKENDS: dict[str, AttentionBackend] = {}
#: the order `auto` tries: fastest first, the explicit reference last
AUTO_ORDER: list[str] = ["flash_attn", "sdpa", "math"]


def register_backend(backend: AttentionBackend, auto_rank: int | None = None) -> None:
    """Add a kernel; with `auto_rank` it also joins the `auto` chain at that position."""
    _BACKENDS[backend.name] = backend
    if auto_rank is not None and backend.name not in AUTO_ORDER:
        AUTO_ORDER.insert(auto_rank, backend.name)


def backend_names() -> list[str]:
    return ["auto", *_BACKENDS]


def check_backend_name(name: str) -> None:
    if name not in backend_names():
        raise ValueError(f"unknown attention_backend '{name}'; choose one of: {', '.join(backend_names())}")


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """True where query i may see key j; queries are the last `q_len` of the `k_len` keys."""
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device)[:, None]
    cols = torch.arange(k_len, device=device)[None, :]
    return cols <= rows + offset


def _math_kernel(q, k, v, *, bias, causal, dropout_p, scale):
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


def _sdpa_kernel(q, k, v, *, bias, causal, dropout_p, scale):
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


def _flash_attn_kernel(q, k, v, *, bias, causal, dropout_p, scale):
    from flash_attn import flash_attn_func

    # flash-attn wants (B, T, H, D); its causal mask is aligned bottom-right like ours
    out = flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        dropout_p=dropout_p, softmax_scale=scale, causal=causal,
    )
    return out.transpose(1, 2)


def _flash_attn_unavailable(q, bias, dropout_p):
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed (pip install 'ablate[gpu]')"
    if not q.is_cuda:
        return "flash-attn needs CUDA"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn needs fp16/bf16, got {q.dtype}"
    if bias is not None:
        return "flash-attn takes no additive attention bias"
    return None


def _triton_kernel(q, k, v, *, bias, causal, dropout_p, scale):
    from harness.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, scale, causal)


def _triton_unavailable(q, bias, dropout_p):
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


def _always(q, bias, dropout_p):
    return None


register_backend(AttentionBackend("math", _math_kernel, _always, "explicit reference"))
register_backend(AttentionBackend("sdpa", _sdpa_kernel, _always, "torch scaled_dot_product_attention"))
register_backend(AttentionBackend("flash_attn", _flash_attn_kernel, _flash_attn_unavailable, "flash-attn 2"))
# our own kernel is chosen by name only: on a GPU the two above are faster
register_backend(AttentionBackend("triton", _triton_kernel, _triton_unavailable, "ablate's Triton flash attention"))


@dataclass
class AttentionKernel:
    """Dispatches attention calls to the requested backend, falling back along a chain.

    The decision is made once per kind of call (device, dtype, bias or not, dropout or not) and
    recorded: `used` names the backends that ran, `fallbacks` why others were passed over.
    """

    requested: str = "auto"
    used: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    _decisions: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.requested != "auto" and self.requested not in _BACKENDS:
            raise AblateError(f"unknown attention backend '{self.requested}'; choose one of: {', '.join(backend_names())}")

    def chain(self) -> list[str]:
        if self.requested == "auto":
            return [name for name in AUTO_ORDER if name in _BACKENDS]
        # an explicit choice that cannot serve a call falls back to the reference kernels
        return [self.requested] + [name for name in ("sdpa", "math") if name != self.requested]

    def __call__(self, q, k, v, *, bias=None, causal=True, dropout_p=0.0, scale=None):
        key = (q.device.type, q.dtype, bias is None, dropout_p > 0.0)
        backend = self._decisions.get(key)
        if backend is None:
            backend = self._decide(q, bias, dropout_p)
            self._decisions[key] = backend
        if scale is None:
            scale = 1.0 / _math.sqrt(q.size(-1))
        return backend.kernel(q, k, v, bias=bias, causal=causal, dropout_p=dropout_p, scale=scale)

    def _decide(self, q, bias, dropout_p) -> AttentionBackend:
        for name in self.chain():
            reason = _BACKENDS[name].unavailable(q, bias, dropout_p)
            if reason is None:
                if name not in self.used:
                    self.used.append(name)
                return _BACKENDS[name]
            note = f"{name}: {reason}"
            if note not in self.fallbacks:
                self.fallbacks.append(note)
        raise RuntimeError("no attention backend can serve this call")  # math always can

    def report(self) -> dict[str, str]:
        """What to record on a run: requested backend, backends that ran, fallbacks taken."""
        return {
            "attention_backend_requested": self.requested,
            "attention_backend": ",".join(self.used) or "(not run yet)",
            "attention_backend_fallbacks": "; ".join(self.fallbacks),
        }
