"""Dropout variants choose each layer's rate."""

import pytest

from tests.conftest import tiny_model


def test_constant_dropout_is_the_same_everywhere():
    model = tiny_model(n_layer=4, dropout={"name": "constant", "p": 0.2})
    assert model.embedding_dropout.p == 0.2
    assert [b.dropout.p for b in model.blocks] == [0.2] * 4
    assert [b.attention.dropout for b in model.blocks] == [0.2] * 4


def test_depth_scaled_dropout_falls_linearly_with_depth():
    model = tiny_model(n_layer=4, dropout={"name": "depth_scaled", "p": 0.4, "final_scale": 0.25})
    assert [b.dropout.p for b in model.blocks] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert model.embedding_dropout.p == 0.4


def test_dropout_probability_must_be_below_one():
    with pytest.raises(ValueError, match="p"):
        tiny_model(dropout={"name": "constant", "p": 1.0})
