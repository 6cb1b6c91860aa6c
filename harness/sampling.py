"""Text from a checkpoint: rebuild model and tokenizer, then generate."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config import ModelConfig
from harness.data import Tokenizer
from harness.generate import generate
from harness.model import GPT
from harness.training.checkpoint import load_checkpoint
from harness.training.trainer import resolve_device


def model_from_checkpoint(path: Path, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    state = load_checkpoint(path)
    model = GPT(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), Tokenizer.from_state(state["tokenizer"])


def sample_text(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                top_k: int | None, seed: int) -> str:
    device = model.token_embedding.weight.device
    tokens = tokenizer.encode(prompt) or [0]
    idx = torch.tensor([tokens], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return tokenizer.decode(out[0].tolist())


def sample_from_checkpoint(path: Path, prompt: str, max_new_tokens: int, temperature: float,
                           top_k: int | None, seed: int, device: str) -> str:
    model, tokenizer = model_from_checkpoint(path, device)
    return sample_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed)


def training_sample(trainer) -> str:
    """A short sample logged with a run (none for tasks such as addition, nor from a model
    whose weights went non-finite when it diverged)."""
    if trainer.dataset.exact_match:
        return ""
    if not all(torch.isfinite(p).all() for p in trainer.model.parameters()):
        return ""
    trainer.model.eval()
    return sample_text(trainer.model, trainer.dataset.tokenizer, "\n", 300, temperature=0.8, top_k=50, seed=0)
