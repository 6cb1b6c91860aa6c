"""The GPT, assembled from slots.

Data meets it in this order: token embedding (+ position embedding, if the position
variant has one), dropout, the blocks (each a placement variant wiring an attention and an
MLP variant with norms), the final norm (when the placement wants one), the LM head. The
model never names a variant: it asks the registry for the one its config chose per slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.config.model import ModelConfig
from harness.kernels import FusedOp
from harness.model.attention import AttentionKernel
from harness.model.kv_cache import KVCache, LayerKVCache
from harness.registry import InitTarget, LayerInfo, PositionEncoding, lookup, writes_residual


def build(slot: str, cfg: ModelConfig, **slot_arguments):
    """Call the factory of the variant `cfg` chose for `slot`."""
    variant = lookup(slot, getattr(cfg, slot).name)
    return variant.factory(cfg, cfg.options(slot), **slot_arguments)


class AttentionContext:
    """What an attention variant gets from the model for one layer of one forward pass.

    The variant computes its projections and calls :meth:`attend`; positions (rotation or
    bias), the KV cache and the kernel are the model's business.
    """

    def __init__(self, positions: torch.Tensor, position: PositionEncoding, kernel: AttentionKernel,
                 cache: LayerKVCache | None):
        self.positions = positions
        self.position = position
        self.kernel = kernel
        self.cache = cache

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        """Causal attention of q (B, H, T, D) over k, v (B, H_kv, T, D) -> (B, H, T, D)."""
        q, k = self.position.rotate(q, k, self.positions)
        k_positions = self.positions
        if self.cache is not None:
            k, v = self.cache.append(k, v)
            k_positions = torch.arange(k.size(2), device=k.device)
        bias = None
        if self.position.needs_attention_bias:
            bias = self.position.attention_bias(self.positions, k_positions).unsqueeze(0).to(q.dtype)
        return self.kernel(q, k, v, bias=bias, causal=True, dropout_p=dropout_p)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("the model's vocabulary is not known yet: build it from cfg.for_vocabulary(tokens)")
        self.cfg = cfg
        dropout = build("dropout", cfg)

        def make_norm(dim: int) -> nn.Module:
            return build("norm", cfg, dim=dim)

        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position = build("position", cfg)
        self.embedding_dropout = nn.Dropout(dropout.embedding)
        blocks = []
        for index in range(cfg.n_layer):
            layer = LayerInfo(index=index, n_layer=cfg.n_layer, dropout=dropout.rate(index, cfg.n_layer))
            blocks.append(build("placement", cfg, layer=layer, make_norm=make_norm,
                                attention=build("attention", cfg, layer=layer),
                                mlp=build("mlp", cfg, layer=layer)))
        self.blocks = nn.ModuleList(blocks)
        # post-norm blocks end in a norm already; a second one would change the model
        self.final_norm = make_norm(cfg.d_model) if type(blocks[0]).final_norm else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            # one matrix reads tokens in and writes logits out (Press & Wolf 2017)
            self.lm_head.weight = self.token_embedding.weight
        self.attention_kernel = AttentionKernel(cfg.attention_backend)
        build("init", cfg)(self, self.init_targets())

    # ---- forward -------------------------------------------------------------------------

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy (targets of -1 ignored)."""
        start = cache.length if cache is not None else 0
        length = idx.size(1)
        if start + length > self.cfg.context_length:
            raise ValueError(f"sequence of {start + length} tokens exceeds context_length {self.cfg.context_length}")
        positions = torch.arange(start, start + length, device=idx.device)
        x = self.token_embedding(idx)
        position_embedding = self.position.embed(positions)
        if position_embedding is not None:
            x = x + position_embedding
        x = self.embedding_dropout(x)
        for index, block in enumerate(self.blocks):
            ctx = AttentionContext(positions, self.position, self.attention_kernel,
                                   cache.layers[index] if cache is not None else None)
            if self.cfg.gradient_checkpointing and self.training:
                x = checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x = block(x, ctx)
        logits = self.lm_head(self.final_norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    def new_cache(self, batch: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache sized for the context; it holds only the key/value heads."""
        device = device or self.token_embedding.weight.device
        dtype = dtype or self.token_embedding.weight.dtype
        return KVCache([
            LayerKVCache(batch, block.attention.n_kv_heads, self.cfg.context_length,
                         block.attention.head_dim, device, dtype)
            for block in self.blocks
        ])

    # ---- accounting ----------------------------------------------------------------------

    def init_targets(self):
        """The parameters an init variant sets, with their role and block index."""
        layer_of = {id(m): i for i, block in enumerate(self.blocks) for m in block.modules()}
        seen: set[int] = set()
        for module in self.modules():
            layer = layer_of.get(id(module))
            if isinstance(module, nn.Embedding):
                found = [(module.weight, "embedding")]
            elif isinstance(module, nn.Linear):
                found = [(module.weight, "residual_output" if writes_residual(module) else "linear")]
                if module.bias is not None:
                    found.append((module.bias, "bias"))
            else:
                continue
            for parameter, role in found:
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield InitTarget(parameter, role, layer)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied head is the embedding).

        Non-embedding leaves out the vocabulary and position tables and an untied LM head
        (Kaplan et al. 2020): what differs between block variants.
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            tables = {id(m.weight): m.weight for m in self.modules() if isinstance(m, nn.Embedding)}
            tables[id(self.lm_head.weight)] = self.lm_head.weight
            total -= sum(p.numel() for p in tables.values())
        return total

    def flops_per_token(self, training: bool = True) -> int:
        """Matmul FLOPs per token at full context (PaLM appendix B): 2 per weight of every
        linear layer, LM head included, plus 4 * d_model * context per layer for QK^T and AV;
        training (forward + backward) is three times the forward."""
        linear = sum(2 * m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        attention = 4 * self.cfg.n_layer * self.cfg.n_head * self.cfg.head_dim * self.cfg.context_length
        forward = linear + attention
        return 3 * forward if training else forward

    def kernel_report(self) -> dict[str, str]:
        """What computed attention and each fusable op, and why a requested kernel was not
        used: recorded on the run once the model has run."""
        report = self.attention_kernel.report()
        switches = [op for m in self.modules() for op in vars(m).values() if isinstance(op, FusedOp)]
        for op in dict.fromkeys(switch.op for switch in switches):
            mine = [switch for switch in switches if switch.op == op]
            report[f"kernel_{op}"] = ",".join(dict.fromkeys(u for s in mine for u in s.used)) or "(not run yet)"
            fallbacks = "; ".join(dict.fromkeys(f for s in mine for f in s.fallbacks))
            if fallbacks:
                report[f"kernel_{op}_fallbacks"] = fallbacks
        return report

    def summary(self) -> str:
        lines = [
            f"GPT: {self.cfg.describe()}",
            f"parameters: {self.num_parameters():,} total, {self.num_parameters(non_embedding=True):,} non-embedding",
            f"training FLOPs/token: {self.flops_per_token():,}",
            "",
            str(self),
        ]
        return "\n".join(lines)
