"""Choosing between a Triton kernel and its torch reference, and remembering the choice."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable

import torch

from harness.kernels.references import rms_norm_reference, swiglu_reference

# op -> (torch reference, "module:function" of our Triton kernel, imported only when used)
FUSED_OPS: dict[str, tuple[Callable, str]] = {
    "rmsnorm": (rms_norm_reference, "harness.kernels.rmsnorm:rms_norm"),
    "swiglu": (swiglu_reference, "harness.kernels.swiglu:swiglu"),
}


def triton_unavailable(device: torch.device) -> str | None:
    """Why our Triton kernels cannot run on `device`, or None when they can."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'ablate[gpu]')"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"Triton kernels need CUDA (or TRITON_INTERPRET=1 on the CPU), not {device.type}"


class FusedOp:
    """One fusable op in one model, called like the function it computes.

    `requested` is 'torch' or 'triton'. A Triton request that cannot be served on a device
    falls back to the torch reference; `used` and `fallbacks` say what ran, so the run can
    record it. The decision is made once per device type.
    """

    def __init__(self, op: str, requested: str):
        if op not in FUSED_OPS:
            raise KeyError(f"no fusable op '{op}'; known: {', '.join(FUSED_OPS)}")
        self.op = op
        self.requested = requested
        self.used: list[str] = []
        self.fallbacks: list[str] = []
        self._by_device: dict[str, Callable] = {}

    def __call__(self, x: torch.Tensor, *args):
        fn = self._by_device.get(x.device.type)
        if fn is None:
            fn = self._by_device[x.device.type] = self._decide(x.device)
        return fn(x, *args)

    def _decide(self, device: torch.device) -> Callable:
        reference, triton_path = FUSED_OPS[self.op]
        reason = triton_unavailable(device) if self.requested == "triton" else None
        if reason:
            self.fallbacks.append(f"{self.op} triton: {reason}")
        ran = "triton" if self.requested == "triton" and not reason else "torch"
        if ran not in self.used:
            self.used.append(ran)
        if ran == "torch":
            return reference
        module, name = triton_path.split(":")
        return getattr(importlib.import_module(module), name)


def fused_op(op: str, cfg) -> FusedOp:
    """The implementation of `op` that the model config `cfg` asks for (cfg.kernels)."""
    return FusedOp(op, getattr(cfg.kernels, op))
