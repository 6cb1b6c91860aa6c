"""Fused RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, forward and backward in one pass each.

Torch eager runs the forward as several kernels (square, mean, rsqrt, two products) and
the backward as more; here each row is read once forward (keeping 1/rms for backward) and
once backward. The weight gradient is summed per program, then across programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from harness.kernels.launch import reduction_programs, row_block, warps_for


@triton.jit
def _forward(X, W, Y, RSTD, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * N + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _backward(DY, X, W, RSTD, DX, DW_PARTIAL, rows, N, rows_per_program, BLOCK: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program  # 64-bit offsets from here on
    last = tl.minimum(first + rows_per_program, rows)
    for row in range(first, last):
        offset = row * N
        x = tl.load(X + offset + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offset + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        wdy = w * dy
        # d/dx of x_hat * w: the gain's gradient minus its projection on x_hat
        dx = (wdy - x_hat * (tl.sum(x_hat * wdy, axis=0) / N)) * rstd
        tl.store(DX + offset + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(DW_PARTIAL + program * N + cols, dw, mask=mask)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        x2d = x.reshape(-1, shape[-1]).contiguous()
        rows, n = x2d.shape
        y = torch.empty_like(x2d)
        rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
        block = row_block(n)
        _forward[(rows,)](x2d, weight, y, rstd, n, eps, BLOCK=block, num_warps=warps_for(block))
        ctx.save_for_backward(x2d, weight, rstd)
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2d, weight, rstd = ctx.saved_tensors
        rows, n = x2d.shape
        dy2d = dy.reshape(rows, n).contiguous()
        dx = torch.empty_like(x2d)
        programs = reduction_programs(rows, x2d.device)
        per_program = triton.cdiv(rows, programs)
        programs = triton.cdiv(rows, per_program)
        dw_partial = torch.empty(programs, n, device=x2d.device, dtype=torch.float32)
        block = row_block(n)
        _backward[(programs,)](dy2d, x2d, weight, rstd, dx, dw_partial, rows, n, per_program,
                               BLOCK=block, num_warps=warps_for(block))
        return dx.reshape(dy.shape), dw_partial.sum(0).to(weight.dtype), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of `x`, in the input's dtype (statistics in fp32)."""
    return _RMSNorm.apply(x, weight, eps)
