"""Model FLOPs utilisation: achieved FLOP/s over the device's dense bf16 peak."""

from __future__ import annotations

import torch

# dense bf16 tensor-core peaks (no sparsity), from the vendors' datasheets
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756e12
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in name:
            return peak
    return None


def mfu(flops_per_token: int, tokens_per_second: float, device: torch.device) -> float | None:
    peak = peak_flops(device)
    return flops_per_token * tokens_per_second / peak if peak else None
