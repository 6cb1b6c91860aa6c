"""Placement variants wire the same sub-layers differently."""

import torch

from harness.model.gpt import AttentionContext
from tests.conftest import tiny_model


def _block_and_parts(placement):
    model = tiny_model(placement=placement, norm="rmsnorm").eval()
    block = model.blocks[0]
    x = torch.randn(1, 6, 32)
    ctx = AttentionContext(torch.arange(6), model.position, model.attention_kernel, None)
    return block, x, ctx


def test_pre_norm_normalises_the_branch_input_and_leaves_the_residual_stream_alone():
    block, x, ctx = _block_and_parts("pre")
    h = x + block.attention(block.attention_norm(x), ctx)
    torch.testing.assert_close(block(x, ctx), h + block.mlp(block.mlp_norm(h)))


def test_post_norm_places_the_norm_after_the_residual_add():
    block, x, ctx = _block_and_parts("post")
    h = block.attention_norm(x + block.attention(x, ctx))
    expected = block.mlp_norm(h + block.mlp(h))
    torch.testing.assert_close(block(x, ctx), expected)
    # every post-norm block ends in a norm: unit root mean square with unit gains
    torch.testing.assert_close(expected.pow(2).mean(-1), torch.ones(1, 6), atol=1e-4, rtol=0)


def test_sandwich_norm_normalises_branch_inputs_and_outputs():
    block, x, ctx = _block_and_parts("sandwich")
    h = x + block.attention_out_norm(block.attention(block.attention_norm(x), ctx))
    torch.testing.assert_close(block(x, ctx), h + block.mlp_out_norm(block.mlp(block.mlp_norm(h))))


def test_parallel_block_feeds_attention_and_mlp_the_same_normalised_input():
    block, x, ctx = _block_and_parts("parallel")
    h = block.norm(x)
    torch.testing.assert_close(block(x, ctx), x + block.attention(h, ctx) + block.mlp(h))


def test_only_post_norm_goes_without_a_final_norm():
    assert isinstance(tiny_model(placement="post").final_norm, torch.nn.Identity)
    for placement in ("pre", "sandwich", "parallel"):
        assert not isinstance(tiny_model(placement=placement).final_norm, torch.nn.Identity)
