"""Normalisation layers."""

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.registry import Options, fused_op, register


class LayerNormOptions(Options):
    eps: float = Field(1e-5, gt=0)


@register("norm", "layernorm", LayerNormOptions)
class LayerNorm(nn.Module):
    """LayerNorm (Ba et al. 2016): centre, scale to unit variance, then gain and shift.

    The shift exists only when the model's ``bias`` switch is on (nanoGPT's choice).
    """

    def __init__(self, cfg, options: LayerNormOptions, dim: int):
        super().__init__()
        self.eps = options.eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if cfg.bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNormOptions(Options):
    eps: float = Field(1e-6, gt=0)


@register("norm", "rmsnorm", RMSNormOptions)
class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): divide by the root mean square and apply a gain.

    No centring and no shift: cheaper than LayerNorm, used by T5 and Llama.
    """

    def __init__(self, cfg, options: RMSNormOptions, dim: int):
        super().__init__()
        self.eps = options.eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.rms_norm = fused_op("rmsnorm", cfg)  # torch's, or our Triton kernel

    def forward(self, x):
        return self.rms_norm(x, self.weight, self.eps)
