"""Fused SwiGLU activation: silu(gate) * up, from the gate/up projection in one tensor.

The gated MLP computes gate and up with one matmul into (..., 2 * hidden). Torch eager
then runs a SiLU and a product forward, and four elementwise kernels backward with the
intermediates kept; here one kernel reads the projection and writes the activation, and
one writes the projection's gradient straight into its (..., 2 * hidden) layout, recomputing
the sigmoid rather than storing it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _forward(GATE_UP, OUT, hidden, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    gate = tl.load(GATE_UP + row * 2 * hidden + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GATE_UP + row * 2 * hidden + hidden + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(OUT + row * hidden + cols, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _backward(GATE_UP, DOUT, DGATE_UP, hidden, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    gate = tl.load(GATE_UP + row * 2 * hidden + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GATE_UP + row * 2 * hidden + hidden + cols, mask=mask, other=0.0).to(tl.float32)
    dout = tl.load(DOUT + row * hidden + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    # silu'(g) = sig(g) * (1 + g * (1 - sig(g)))
    dgate = dout * up * (sig + silu * (1.0 - sig))
    dup = dout * silu
    tl.store(DGATE_UP + row * 2 * hidden + cols, dgate.to(DGATE_UP.dtype.element_ty), mask=mask)
    tl.store(DGATE_UP + row * 2 * hidden + hidden + cols, dup.to(DGATE_UP.dtype.element_ty), mask=mask)


def _grid(rows: int, hidden: int, block: int) -> tuple[int, int]:
    return rows, triton.cdiv(hidden, block)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up):
        shape = gate_up.shape
        hidden = shape[-1] // 2
        flat = gate_up.reshape(-1, 2 * hidden).contiguous()
        out = torch.empty(flat.size(0), hidden, device=flat.device, dtype=flat.dtype)
        block = min(BLOCK, triton.next_power_of_2(hidden))
        _forward[_grid(flat.size(0), hidden, block)](flat, out, hidden, BLOCK=block)
        ctx.save_for_backward(flat)
        return out.reshape(*shape[:-1], hidden)

    @staticmethod
    def backward(ctx, dout):
        (flat,) = ctx.saved_tensors
        hidden = flat.size(1) // 2
        dout2d = dout.reshape(-1, hidden).contiguous()
        dflat = torch.empty_like(flat)
        block = min(BLOCK, triton.next_power_of_2(hidden))
        _backward[_grid(flat.size(0), hidden, block)](flat, dout2d, dflat, hidden, BLOCK=block)
        return dflat.reshape(*dout.shape[:-1], 2 * hidden)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up where gate, up = gate_up.chunk(2, dim=-1)."""
    if gate_up.size(-1) % 2:
        raise ValueError(f"gate_up's last dimension ({gate_up.size(-1)}) must be even")
    return _SwiGLU.apply(gate_up)
