"""Sampling from a GPT: greedy, temperature and top-k, with a KV cache.

With the cache, the prompt is encoded once and each new token costs one position. Once the
sequence fills the context, positions shift at every step, so the remaining tokens are
computed from the last `context_length` tokens without a cache, exactly as without one.
"""

from __future__ import annotations

import torch

from harness.model.gpt import GPT


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
             vocab_size: int | None = None) -> torch.Tensor:
    """Append `max_new_tokens` tokens to each row of `idx` (B, T). temperature 0 is greedy.
    Only the first `vocab_size` tokens are drawn: the rows padding a table (50257 as 50304) are
    no token of the tokenizer."""
    context = model.cfg.context_length
    cache = model.new_cache(idx.size(0)) if use_cache and idx.size(1) < context else None
    fed = 0  # tokens of idx already in the cache
    for _ in range(max_new_tokens):
        if cache is not None and idx.size(1) <= context:
            logits, _ = model(idx[:, fed:], cache=cache)
            fed = idx.size(1)
        else:
            logits, _ = model(idx[:, -context:])
        next_token = _sample(logits[:, -1, :vocab_size].float(), temperature, top_k, generator)
        idx = torch.cat([idx, next_token], dim=1)
    return idx


def sample_text(model: GPT, tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.8,
                top_k: int | None = 50, seed: int = 0) -> str:
    """The prompt and its continuation as text; `tokenizer` encodes and decodes (harness.data)."""
    device = model.token_embedding.weight.device
    tokens = tokenizer.encode(prompt) or [0]
    idx = torch.tensor([tokens], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator,
                   vocab_size=tokenizer.vocab_size)
    return tokenizer.decode(out[0].tolist())


def _sample(logits, temperature, top_k, generator):
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)
