"""Optimizer groups and the learning-rate schedule."""

import pytest
import torch

from harness.config.train import TrainConfig
from harness.training.optim import lr_at, make_optimizer
from tests.conftest import tiny_model


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = tiny_model(position="learned", tie_embeddings=False)
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert "blocks.0.mlp.up.weight" in names and "lm_head.weight" in names
    assert not [n for n in names if "norm" in n or n.endswith("bias") or "embedding" in n or "position" in n]
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(109, cfg) == pytest.approx(0.1)
    assert lr_at(60, cfg) == pytest.approx(0.55, abs=0.01)


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
