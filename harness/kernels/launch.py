"""Launch settings shared by the kernels."""

from __future__ import annotations

import torch
import triton


def row_block(n: int) -> int:
    """A power-of-two block that holds a whole row of `n` elements."""
    return triton.next_power_of_2(n)


def warps_for(block: int) -> int:
    return min(max(block // 256, 1), 16)


def reduction_programs(rows: int, device: torch.device) -> int:
    """How many programs share the rows of a backward pass that reduces over rows (a
    norm's weight gradient): enough to fill the GPU, few enough that their partial sums
    are cheap to add up."""
    if device.type == "cuda":
        slots = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        slots = 4
    return max(1, min(rows, slots))
