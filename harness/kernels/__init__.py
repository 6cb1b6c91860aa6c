"""Our own Triton kernels, each beside the torch reference it must match.

They are runtime choices, like the attention backend: selecting one never changes what a
model computes beyond floating-point rounding. Triton compiles them for CUDA; on the CPU
they run only under Triton's interpreter (``TRITON_INTERPRET=1``), which the tests use.
The kernel modules import Triton; nothing else here does, so the package works without it.
"""

from harness.kernels.switch import FUSED_OPS, FusedOp, fused_op, triton_unavailable

__all__ = ["FUSED_OPS", "FusedOp", "fused_op", "triton_unavailable"]
