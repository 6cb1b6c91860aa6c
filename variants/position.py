"""How the model knows where a token is: an input embedding, a q/k rotation, an attention
bias, or nothing at all."""

import math

import torch
from pydantic import Field
from torch import nn

from harness.registry import Options, PositionEncoding, register


@register("position", "learned")
class LearnedPositions(PositionEncoding):
    """Learned absolute position embeddings (GPT-2): one trained vector per position, added
    to the token embedding."""

    def __init__(self, cfg, options):
        super().__init__()
        self.table = nn.Embedding(cfg.context_length, cfg.d_model)

    def embed(self, positions):
        return self.table(positions)


@register("position", "sinusoidal")
class SinusoidalPositions(PositionEncoding):
    """Fixed sinusoidal position embeddings (Vaswani et al. 2017), added to the token embedding."""

    def __init__(self, cfg, options):
        super().__init__()
        position = torch.arange(cfg.context_length, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, cfg.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / cfg.d_model))
        table = torch.zeros(cfg.context_length, cfg.d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : cfg.d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def embed(self, positions):
        return self.table[positions]


class RoPEOptions(Options):
    theta: float = Field(10000.0, gt=0, description="base of the rotation frequencies")

    def check_model(self, model) -> None:
        if model.head_dim % 2:
            raise ValueError(f"position 'rope': head_dim ({model.head_dim}) must be even")


@register("position", "rope", RoPEOptions)
class RotaryPositions(PositionEncoding):
    """Rotary position embeddings (Su et al. 2021): rotate query and key pairs by an angle
    proportional to the position, so their dot product depends only on the offset.

    Uses the half-split pairing of GPT-NeoX and Llama in Hugging Face form.
    """

    def __init__(self, cfg, options: RoPEOptions):
        super().__init__()
        inverse_frequency = 1.0 / options.theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.context_length, dtype=torch.float32), inverse_frequency)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, q, k, positions):
        cos = self.cos[positions].to(q.dtype)
        sin = self.sin[positions].to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


@register("position", "alibi")
class ALiBiPositions(PositionEncoding):
    """ALiBi (Press et al. 2022): no embedding; each head subtracts slope * distance from its
    attention scores, with geometric slopes per head."""

    needs_attention_bias = True

    def __init__(self, cfg, options):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(cfg.n_head)), persistent=False)

    def attention_bias(self, q_positions, k_positions):
        distance = (k_positions[None, :] - q_positions[:, None]).clamp(max=0).to(self.slopes.dtype)
        return self.slopes[:, None, None] * distance[None]


def alibi_slopes(n_head: int) -> list[float]:
    """The paper's slopes: 2^(-8/n)^i for n a power of two, interleaved otherwise."""

    def power_of_two(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return power_of_two(n_head)
    closest = 2 ** math.floor(math.log2(n_head))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_head - closest]


@register("position", "none")
class NoPositions(PositionEncoding):
    """No position information (NoPE; Haviv et al. 2022): causal masking alone lets a
    decoder infer positions."""

    def __init__(self, cfg, options):
        super().__init__()
