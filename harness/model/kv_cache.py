"""Key/value cache for generation: one preallocated buffer pair per layer.

Buffers hold only the key/value heads (n_kv_heads), so MQA and GQA caches are
n_head / n_kv_heads times smaller than MHA's. Keys are stored after the position
rotation, so cached keys are never rotated twice.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, device, dtype):
        self.keys = torch.empty(batch, n_kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.values = torch.empty_like(self.keys)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values and return all of them so far."""
        end = self.length + k.size(2)
        if end > self.keys.size(2):
            raise ValueError(f"KV cache holds {self.keys.size(2)} positions; {end} were asked for")
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2


class KVCache:
    """The caches of all layers; `length` is the number of positions already stored."""

    def __init__(self, layers: list[LayerKVCache]):
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].length

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
