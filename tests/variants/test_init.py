"""Init variants differ in how they scale the projections that write the residual stream."""

import math

import pytest

from tests.conftest import tiny_model


def _std(parameter):
    return parameter.detach().std().item()


def _residual_out(model, layer):
    return model.blocks[layer].mlp.down.weight


@pytest.mark.parametrize("init", ["normal", "gpt2", "layer_scaled"])
def test_plain_weights_and_embeddings_have_the_configured_std_and_biases_are_zero(init):
    model = tiny_model(d_model=128, n_layer=4, init={"name": init, "std": 0.05})
    assert _std(model.blocks[0].mlp.up.weight) == pytest.approx(0.05, rel=0.05)
    assert _std(model.token_embedding.weight) == pytest.approx(0.05, rel=0.1)
    assert model.blocks[0].mlp.up.bias.abs().max() == 0


def test_normal_init_does_not_scale_residual_projections():
    model = tiny_model(d_model=128, n_layer=4, init="normal")
    assert _std(_residual_out(model, 3)) == pytest.approx(0.02, rel=0.05)


def test_gpt2_init_scales_residual_projections_by_one_over_sqrt_two_n_layer():
    model = tiny_model(d_model=128, n_layer=4, init="gpt2")
    for layer in (0, 3):
        assert _std(_residual_out(model, layer)) == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert _std(model.blocks[0].attention.out.weight) == pytest.approx(0.02 / math.sqrt(8), rel=0.05)


def test_layer_scaled_init_shrinks_residual_projections_with_depth():
    model = tiny_model(d_model=128, n_layer=4, init="layer_scaled")
    for layer in range(4):
        assert _std(_residual_out(model, layer)) == pytest.approx(0.02 / math.sqrt(2 * (layer + 1)), rel=0.05)
