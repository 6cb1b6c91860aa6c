"""Feed-forward variants."""

import pytest
import torch

from tests.conftest import tiny_model


def _mlp_parameters(model):
    return sum(p.numel() for p in model.blocks[0].mlp.parameters())


@pytest.mark.parametrize("gated", ["swiglu", "geglu"])
@pytest.mark.parametrize("d_model,bias", [(32, True), (96, False), (256, True), (768, False)])
def test_gated_mlps_match_the_gelu_mlp_parameter_count_within_two_percent(gated, d_model, bias):
    plain = _mlp_parameters(tiny_model(d_model=d_model, bias=bias, mlp="gelu"))
    gated_count = _mlp_parameters(tiny_model(d_model=d_model, bias=bias, mlp=gated))
    assert abs(gated_count - plain) / plain <= 0.02


def test_swiglu_hidden_width_is_two_thirds_of_the_plain_width_rounded_up_to_multiple_of():
    model = tiny_model(d_model=96, mlp={"name": "swiglu", "multiple_of": 64})
    assert model.blocks[0].mlp.down.in_features == 256  # 2/3 * 4 * 96 = 256
    model = tiny_model(d_model=96, mlp={"name": "swiglu", "hidden_ratio": 3, "multiple_of": 64})
    assert model.blocks[0].mlp.down.in_features == 192


def test_swiglu_computes_silu_gate_times_up():
    mlp = tiny_model(mlp="swiglu").blocks[0].mlp
    x = torch.randn(3, 32)
    gate_w, up_w = mlp.gate_up.weight.chunk(2)
    gate_b, up_b = mlp.gate_up.bias.chunk(2)
    expected = mlp.down(torch.nn.functional.silu(x @ gate_w.T + gate_b) * (x @ up_w.T + up_b))
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("name,activation", [("gelu", torch.nn.functional.gelu), ("relu", torch.relu)])
def test_plain_mlps_apply_their_activation_between_two_matmuls(name, activation):
    mlp = tiny_model(mlp=name).blocks[0].mlp
    x = torch.randn(3, 32)
    torch.testing.assert_close(mlp(x), mlp.down(activation(mlp.up(x))))


def test_unknown_mlp_option_is_refused_with_its_name():
    with pytest.raises(ValueError, match="hiden_ratio"):
        tiny_model(mlp={"name": "swiglu", "hiden_ratio": 4})
