"""The torch computations our Triton kernels replace: what each kernel must match, and what
runs when the Triton kernel is not requested or cannot run."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, weight.shape, weight, eps)


def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up where gate, up = gate_up.chunk(2, dim=-1)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
