"""Weight initialisation of the whole model.

Every initialiser draws matmul weights and embeddings from N(0, std) and zeroes biases;
they differ in how they shrink the projections that write into the residual stream, whose
sum otherwise grows with depth. Norm gains keep the norm's own initialisation.
"""

import math

from pydantic import Field
from torch import nn

from harness.registry import Options, register


class InitOptions(Options):
    std: float = Field(0.02, gt=0, description="standard deviation of weights and embeddings")


@register("init", "normal", InitOptions)
class NormalInit:
    """N(0, std) for every weight and embedding, the same at every depth (BERT)."""

    def __init__(self, cfg, options: InitOptions):
        self.std = options.std
        self.n_layer = cfg.n_layer

    def __call__(self, model, targets):
        for target in targets:
            if target.role == "bias":
                nn.init.zeros_(target.parameter)
            else:
                nn.init.normal_(target.parameter, mean=0.0, std=self.std_for(target))

    def std_for(self, target) -> float:
        return self.std


@register("init", "gpt2", InitOptions)
class GPT2Init(NormalInit):
    """GPT-2 (Radford et al. 2019): residual-output projections get std / sqrt(2 * n_layer).

    Each block adds two branches to the residual stream; scaling them keeps its variance
    independent of depth at initialisation.
    """

    def std_for(self, target) -> float:
        if target.role == "residual_output":
            return self.std / math.sqrt(2 * self.n_layer)
        return self.std


@register("init", "layer_scaled", InitOptions)
class LayerScaledInit(NormalInit):
    """Depth-scaled init (Zhang et al. 2019, DS-Init): residual-output projections of block l
    (counting from 1) get std / sqrt(2 * l).

    Deeper blocks start with smaller updates than shallow ones, instead of every block
    sharing GPT-2's single 1 / sqrt(2 * n_layer).
    """

    def std_for(self, target) -> float:
        if target.role == "residual_output" and target.layer is not None:
            return self.std / math.sqrt(2 * (target.layer + 1))
        return self.std
