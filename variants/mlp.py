"""Feed-forward sub-layers: plain (GELU, ReLU) and gated (SwiGLU, GEGLU).

Gated MLPs have three matrices instead of two, so their hidden width is 2/3 of the plain
width (Shazeer 2020; Llama): at the same ``hidden_ratio`` both have the same parameters.
"""

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.registry import Options, fused_op, mark_residual_output, register


class MLPOptions(Options):
    hidden_ratio: float = Field(4.0, gt=0, description="hidden width of a plain MLP / d_model")
    hidden_dim: int | None = Field(None, gt=0, description="explicit hidden width; overrides hidden_ratio")


class GatedMLPOptions(MLPOptions):
    multiple_of: int = Field(1, gt=0, description="round the gated hidden width up to a multiple of this")


class GELUOptions(MLPOptions):
    approximate: Literal["none", "tanh"] = Field("none", description="'tanh' is GPT-2's approximation")


class FeedForward(nn.Module):
    """down(act(up(x)))"""

    def __init__(self, cfg, hidden: int, activation):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.activation = activation
        self.down = mark_residual_output(nn.Linear(hidden, cfg.d_model, bias=cfg.bias))

    def forward(self, x):
        return self.down(self.activation(self.up(x)))


class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)), with gate and up computed by one matmul"""

    def __init__(self, cfg, hidden: int, activation):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * hidden, bias=cfg.bias)
        self.activation = activation
        self.down = mark_residual_output(nn.Linear(hidden, cfg.d_model, bias=cfg.bias))

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.activation(gate) * up)


class SwiGLUFeedForward(GatedFeedForward):
    """The gated MLP with SiLU, whose activation can run as one fused Triton kernel."""

    def __init__(self, cfg, hidden: int):
        super().__init__(cfg, hidden, F.silu)
        self.swiglu = fused_op("swiglu", cfg)  # torch's, or our Triton kernel

    def forward(self, x):
        return self.down(self.swiglu(self.gate_up(x)))


def plain_hidden(cfg, options: MLPOptions) -> int:
    return options.hidden_dim or round(options.hidden_ratio * cfg.d_model)


def gated_hidden(cfg, options: GatedMLPOptions) -> int:
    if options.hidden_dim:
        return options.hidden_dim
    hidden = round(2 / 3 * options.hidden_ratio * cfg.d_model)
    return -(-hidden // options.multiple_of) * options.multiple_of


@register("mlp", "gelu", GELUOptions)
def gelu(cfg, options: GELUOptions, layer):
    """GELU MLP (Hendrycks & Gimpel 2016), as in GPT-2 and BERT."""
    return FeedForward(cfg, plain_hidden(cfg, options), nn.GELU(approximate=options.approximate))


@register("mlp", "relu", MLPOptions)
def relu(cfg, options: MLPOptions, layer):
    """ReLU MLP, as in the original Transformer (Vaswani et al. 2017)."""
    return FeedForward(cfg, plain_hidden(cfg, options), nn.ReLU())


@register("mlp", "swiglu", GatedMLPOptions)
def swiglu(cfg, options: GatedMLPOptions, layer):
    """SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"), as in PaLM and Llama.

    Hidden width 2/3 * hidden_ratio * d_model, rounded, so parameters match the GELU MLP.
    """
    return SwiGLUFeedForward(cfg, gated_hidden(cfg, options))


@register("mlp", "geglu", GatedMLPOptions)
def geglu(cfg, options: GatedMLPOptions, layer):
    """GEGLU (Shazeer 2020): a GELU-gated linear unit, as in T5 v1.1 and Gemma.

    Hidden width 2/3 * hidden_ratio * d_model, rounded, so parameters match the GELU MLP.
    """
    return GatedFeedForward(cfg, gated_hidden(cfg, options), F.gelu)
