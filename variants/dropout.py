"""Dropout rate per layer (embedding, attention weights and residual branches)."""

from pydantic import Field

from harness.registry import Options, register


class ConstantDropoutOptions(Options):
    p: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability everywhere")


@register("dropout", "constant", ConstantDropoutOptions)
class ConstantDropout:
    """The same dropout probability in the embedding and every layer (GPT-2, nanoGPT)."""

    def __init__(self, cfg, options: ConstantDropoutOptions):
        self.embedding = options.p

    def rate(self, layer: int, n_layer: int) -> float:
        return self.embedding


class DepthScaledDropoutOptions(Options):
    p: float = Field(0.1, ge=0.0, lt=1.0, description="dropout of the embedding and the first block")
    final_scale: float = Field(0.25, ge=0.0, le=1.0, description="last block's rate as a fraction of p")


@register("dropout", "depth_scaled", DepthScaledDropoutOptions)
class DepthScaledDropout:
    """Less dropout in deeper blocks: linear from p at the first block to p * final_scale at
    the last. Deep layers carry less redundant signal, so regularising them as hard as the
    first ones mostly slows learning."""

    def __init__(self, cfg, options: DepthScaledDropoutOptions):
        self.embedding = options.p
        self.final_scale = options.final_scale

    def rate(self, layer: int, n_layer: int) -> float:
        depth = layer / (n_layer - 1) if n_layer > 1 else 0.0
        return self.embedding * (1.0 - (1.0 - self.final_scale) * depth)
