"""Causal flash attention (Dao 2022; FlashAttention-2's loop order), forward and backward.

Queries are tiled in blocks of rows; each block streams over the key/value blocks it may
see, keeping a running max and sum of the softmax (log2 domain, so ``exp2`` is the only
transcendental), and never materialises the T x T score matrix. The forward saves the
per-row log-sum-exp; the backward recomputes the probabilities from it, one kernel for
dK/dV (per key block, over query blocks) and one for dQ (per query block, over key blocks).

Shapes follow the attention backends: q (B, H, Tq, D), k and v (B, H_kv, Tk, D) with H a
multiple of H_kv, and the causal mask aligned bottom-right (queries are the last Tq of the
Tk positions, as when decoding with a KV cache). No additive bias and no dropout: the
backend chain serves those calls with another kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _blocks(device: torch.device, head_dim: int) -> tuple[int, int, int]:
    """Query block, key block and the head dim padded to a power of two (tl.dot needs >= 16)."""
    padded = max(16, triton.next_power_of_2(head_dim))
    if device.type == "cuda":
        return (128 if padded <= 64 else 64), 64, padded
    return 16, 16, padded  # the interpreter: small tiles, so tests cross block edges


@triton.jit
def _heads(batch_head, H, groups):
    """(batch, query head, key/value head) of a program's batch x head index, in 64 bits."""
    b = (batch_head // H).to(tl.int64)
    h = (batch_head % H).to(tl.int64)
    return b, h, h // groups


@triton.jit
def _load_tile(base, positions, dims, stride_t, length, D):
    """Rows `positions` x columns `dims` of one head's (T, D) matrix, zero past `length` and D."""
    mask = (positions < length)[:, None] & (dims < D)[None, :]
    return tl.load(base + positions[:, None] * stride_t + dims[None, :], mask=mask, other=0.0)


@triton.jit
def _forward(Q, K, V, O, LSE, scale, Tq, Tk, H, groups, D,
             sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, so_b, so_h, so_t,
             CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    block_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    b, h, h_kv = _heads(batch_head, H, groups)
    offset = Tk - Tq  # query i is position i + offset among the keys
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    dim_ok = dims < D

    q = _load_tile(Q + b * sq_b + h * sq_h, rows, dims, sq_t, Tq, D)
    k_base = K + b * sk_b + h_kv * sk_h
    v_base = V + b * sv_b + h_kv * sv_h
    qk_scale = scale * 1.4426950408889634
    running_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    running_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    end = Tk
    if CAUSAL:
        end = tl.minimum(Tk, (block_m + 1) * BLOCK_M + offset)
    for start in range(0, end, BLOCK_N):
        keys = start + cols
        key_ok = keys < Tk
        k = tl.load(k_base + keys[None, :] * sk_t + dims[:, None], mask=key_ok[None, :] & dim_ok[:, None], other=0.0)
        scores = tl.dot(q, k) * qk_scale
        visible = key_ok[None, :]
        if CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None] + offset)
        scores = tl.where(visible, scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # rows that saw nothing yet
        p = tl.math.exp2(scores - safe_max[:, None])
        rescale = tl.math.exp2(running_max - safe_max)
        running_sum = running_sum * rescale + tl.sum(p, axis=1)
        v = _load_tile(v_base, keys, dims, sv_t, Tk, D)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        running_max = new_max

    safe_sum = tl.where(running_sum == 0.0, 1.0, running_sum)
    out = acc / safe_sum[:, None]
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_t + dims[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(LSE + batch_head.to(tl.int64) * Tq + rows, running_max + tl.math.log2(safe_sum), mask=row_ok)


@triton.jit
def _probabilities(q, k, lse, rows, keys, Tk, offset, qk_scale, CAUSAL: tl.constexpr):
    """Softmax probabilities of a (query block, key block) tile, recomputed from the row
    log-sum-exp the forward saved."""
    scores = tl.dot(q, tl.trans(k)) * qk_scale
    visible = keys[None, :] < Tk
    if CAUSAL:
        visible = visible & (keys[None, :] <= rows[:, None] + offset)
    return tl.where(visible, tl.math.exp2(scores - lse[:, None]), 0.0)


@triton.jit
def _backward_kv(Q, K, V, DO, LSE, DELTA, DK, DV, scale, Tq, Tk, H, groups, D,
                 sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                 CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """dK and dV of one key block for one query head (the caller sums the heads of a group)."""
    block_n = tl.program_id(0)
    batch_head = tl.program_id(1)
    b, h, h_kv = _heads(batch_head, H, groups)
    offset = Tk - Tq
    keys = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    key_ok = keys < Tk
    dim_ok = dims < D
    kv_mask = key_ok[:, None] & dim_ok[None, :]
    k = _load_tile(K + b * sk_b + h_kv * sk_h, keys, dims, sk_t, Tk, D)
    v = _load_tile(V + b * sv_b + h_kv * sv_h, keys, dims, sv_t, Tk, D)
    qk_scale = scale * 1.4426950408889634
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    row_base = batch_head.to(tl.int64) * Tq

    begin = 0
    if CAUSAL:
        begin = tl.maximum(block_n * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M  # earlier queries see none of these keys
    for start in range(begin, Tq, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < Tq
        q = _load_tile(Q + b * sq_b + h * sq_h, rows, dims, sq_t, Tq, D)
        do = _load_tile(DO + b * sq_b + h * sq_h, rows, dims, sq_t, Tq, D)
        lse = tl.load(LSE + row_base + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
        p = _probabilities(q, k, lse, rows, keys, Tk, offset, qk_scale, CAUSAL)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    out = (batch_head.to(tl.int64) * Tk + keys[:, None]) * BLOCK_D + dims[None, :]
    tl.store(DK + out, dk * scale, mask=kv_mask)
    tl.store(DV + out, dv, mask=kv_mask)


@triton.jit
def _backward_q(Q, K, V, DO, LSE, DELTA, DQ, scale, Tq, Tk, H, groups, D,
                sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """dQ of one query block."""
    block_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    b, h, h_kv = _heads(batch_head, H, groups)
    offset = Tk - Tq
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    dim_ok = dims < D
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q = _load_tile(Q + b * sq_b + h * sq_h, rows, dims, sq_t, Tq, D)
    do = _load_tile(DO + b * sq_b + h * sq_h, rows, dims, sq_t, Tq, D)
    row_base = batch_head.to(tl.int64) * Tq
    lse = tl.load(LSE + row_base + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
    qk_scale = scale * 1.4426950408889634
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    end = Tk
    if CAUSAL:
        end = tl.minimum(Tk, (block_m + 1) * BLOCK_M + offset)
    for start in range(0, end, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = _load_tile(K + b * sk_b + h_kv * sk_h, keys, dims, sk_t, Tk, D)
        v = _load_tile(V + b * sv_b + h_kv * sv_h, keys, dims, sv_t, Tk, D)
        p = _probabilities(q, k, lse, rows, keys, Tk, offset, qk_scale, CAUSAL)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    tl.store(DQ + b * sq_b + h * sq_h + rows[:, None] * sq_t + dims[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=q_mask)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch, heads, q_len, head_dim = q.shape
        k_len = k.size(2)
        block_m, block_n, block_d = _blocks(q.device, head_dim)
        out = torch.empty_like(q)
        lse = torch.empty(batch * heads, q_len, device=q.device, dtype=torch.float32)
        grid = (triton.cdiv(q_len, block_m), batch * heads)
        _forward[grid](q, k, v, out, lse, scale, q_len, k_len, heads, heads // k.size(1), head_dim,
                       *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                       CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.causal = scale, causal
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.contiguous()
        batch, heads, q_len, head_dim = q.shape
        kv_heads, k_len = k.size(1), k.size(2)
        groups = heads // kv_heads
        block_m, block_n, block_d = _blocks(q.device, head_dim)
        # D_i = sum_j P_ij dP_ij = rowsum(dO * O): the softmax backward's row term
        delta = (dout.float() * out.float()).sum(-1).reshape(batch * heads, q_len)
        # per query head, fp32, padded to block_d; a group's heads are summed below
        dk = torch.empty(batch, heads, k_len, block_d, device=q.device, dtype=torch.float32)
        dv = torch.empty_like(dk)
        dq = torch.empty_like(q)
        meta = dict(CAUSAL=ctx.causal, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
        args = (ctx.scale, q_len, k_len, heads, groups, head_dim, *_strides(q), *_strides(k), *_strides(v))
        _backward_kv[(triton.cdiv(k_len, block_n), batch * heads)](q, k, v, dout, lse, delta, dk, dv, *args, **meta)
        _backward_q[(triton.cdiv(q_len, block_m), batch * heads)](q, k, v, dout, lse, delta, dq, *args, **meta)
        dk = dk[..., :head_dim].reshape(batch, kv_heads, groups, k_len, head_dim).sum(2).to(k.dtype)
        dv = dv[..., :head_dim].reshape(batch, kv_heads, groups, k_len, head_dim).sum(2).to(v.dtype)
        return dq, dk, dv, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v without the score matrix."""
    return _FlashAttention.apply(q, k, v, scale, causal)
