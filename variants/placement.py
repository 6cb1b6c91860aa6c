"""Where the norms sit relative to the residual connections of a block.

Each placement module takes the block's attention and MLP and wires them, with norms made
by the norm slot and the layer's residual dropout, into one residual block.
"""

from torch import nn

from harness.registry import register


class _Block(nn.Module):
    def __init__(self, layer, attention, mlp, norms: dict[str, nn.Module]):
        super().__init__()
        self.attention = attention
        self.mlp = mlp
        for name, norm in norms.items():
            self.add_module(name, norm)
        self.dropout = nn.Dropout(layer.dropout)


@register("placement", "pre")
class PreNorm(_Block):
    """Pre-norm (GPT-2; Xiong et al. 2020): x + f(norm(x)).

    The residual stream itself is never normalised, so every layer's gradient reaches the
    embedding directly; the model then needs one final norm before the LM head.
    """

    final_norm = True

    def __init__(self, cfg, options, layer, attention, mlp, make_norm):
        super().__init__(layer, attention, mlp,
                         {"attention_norm": make_norm(cfg.d_model), "mlp_norm": make_norm(cfg.d_model)})

    def forward(self, x, ctx):
        x = x + self.dropout(self.attention(self.attention_norm(x), ctx))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


@register("placement", "post")
class PostNorm(_Block):
    """Post-norm (Vaswani et al. 2017): norm(x + f(x)).

    The original Transformer's wiring. Every block's output is already normalised, so
    there is no final norm. Known to need warmup and to destabilise with depth.
    """

    final_norm = False

    def __init__(self, cfg, options, layer, attention, mlp, make_norm):
        super().__init__(layer, attention, mlp,
                         {"attention_norm": make_norm(cfg.d_model), "mlp_norm": make_norm(cfg.d_model)})

    def forward(self, x, ctx):
        x = self.attention_norm(x + self.dropout(self.attention(x, ctx)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


@register("placement", "sandwich")
class SandwichNorm(_Block):
    """Sandwich norm (Ding et al. 2021, CogView): x + norm_out(f(norm_in(x))).

    Pre-norm plus a second norm on each branch's output, which bounds what a branch can
    add to the residual stream.
    """

    final_norm = True

    def __init__(self, cfg, options, layer, attention, mlp, make_norm):
        super().__init__(layer, attention, mlp, {
            "attention_norm": make_norm(cfg.d_model), "attention_out_norm": make_norm(cfg.d_model),
            "mlp_norm": make_norm(cfg.d_model), "mlp_out_norm": make_norm(cfg.d_model),
        })

    def forward(self, x, ctx):
        x = x + self.dropout(self.attention_out_norm(self.attention(self.attention_norm(x), ctx)))
        return x + self.dropout(self.mlp_out_norm(self.mlp(self.mlp_norm(x))))


@register("placement", "parallel")
class ParallelBlock(_Block):
    """Parallel block (GPT-J; PaLM, Chowdhery et al. 2022): x + attn(norm(x)) + mlp(norm(x)).

    Attention and MLP read the same normalised input, so their matmuls can be fused.
    """

    final_norm = True

    def __init__(self, cfg, options, layer, attention, mlp, make_norm):
        super().__init__(layer, attention, mlp, {"norm": make_norm(cfg.d_model)})

    def forward(self, x, ctx):
        h = self.norm(x)
        return x + self.dropout(self.attention(h, ctx) + self.mlp(h))
