"""Norm variants."""

import torch

from tests.conftest import tiny_model


def test_layernorm_centres_and_scales_each_vector():
    norm = tiny_model(norm="layernorm").final_norm
    y = norm(torch.randn(5, 32) * 3 + 7)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_rmsnorm_divides_by_the_root_mean_square_without_centring():
    norm = tiny_model(norm={"name": "rmsnorm", "eps": 1e-8}).final_norm
    x = torch.randn(5, 32) + 3
    torch.testing.assert_close(norm(x), x / x.pow(2).mean(-1, keepdim=True).sqrt())
    assert not [n for n, _ in norm.named_parameters() if n == "bias"]
