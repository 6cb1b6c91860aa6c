"""MHA, MQA and GQA are one mechanism with different numbers of key/value heads."""

import pytest
import torch

from harness.errors import AblateError
from tests.conftest import tiny_config, tiny_model


def _same_weights(target, source):
    target.load_state_dict(source.state_dict())
    return target.eval()


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    mha = tiny_model(attention="mha").eval()
    gqa = _same_weights(tiny_model(attention={"name": "gqa", "n_kv_heads": 4}), mha)
    idx = torch.randint(0, 32, (2, 12))
    torch.testing.assert_close(gqa(idx)[0], mha(idx)[0], rtol=0, atol=0)


def test_gqa_with_one_kv_head_is_mqa():
    mqa = tiny_model(attention="mqa").eval()
    gqa = _same_weights(tiny_model(attention={"name": "gqa", "n_kv_heads": 1}), mqa)
    idx = torch.randint(0, 32, (2, 12))
    torch.testing.assert_close(gqa(idx)[0], mqa(idx)[0], rtol=0, atol=0)


def test_gqa_equals_mha_with_each_kv_head_copied_to_its_query_group():
    gqa = tiny_model(attention={"name": "gqa", "n_kv_heads": 2}).eval()
    mha = tiny_model(attention="mha").eval()
    state = gqa.state_dict()
    head_dim, d = 8, 32
    for i in range(2):
        w, b = state[f"blocks.{i}.attention.qkv.weight"], state[f"blocks.{i}.attention.qkv.bias"]
        q, k, v = w.split([d, 2 * head_dim, 2 * head_dim])
        qb, kb, vb = b.split([d, 2 * head_dim, 2 * head_dim])
        expand = lambda t: t.view(2, head_dim, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(d, *t.shape[1:])
        state[f"blocks.{i}.attention.qkv.weight"] = torch.cat([q, expand(k), expand(v)])
        state[f"blocks.{i}.attention.qkv.bias"] = torch.cat([qb, expand(kb), expand(vb)])
    mha.load_state_dict(state)
    idx = torch.randint(0, 32, (2, 12))
    torch.testing.assert_close(mha(idx)[0], gqa(idx)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("attention,kv_heads", [("mha", 4), ("mqa", 1), ({"name": "gqa", "n_kv_heads": 2}, 2)])
def test_kv_cache_holds_only_the_kv_heads(attention, kv_heads):
    cache = tiny_model(attention=attention).new_cache(batch=3)
    assert cache.layers[0].keys.shape == (3, kv_heads, 16, 8)
    assert cache.nbytes() == 2 * 2 * 3 * kv_heads * 16 * 8 * 4


def test_heads_not_divisible_by_kv_heads_is_refused_before_building():
    with pytest.raises(ValueError, match=r"n_head \(4\) must be divisible by n_kv_heads \(3\)"):
        tiny_config(attention={"name": "gqa", "n_kv_heads": 3})


def test_gqa_requires_n_kv_heads():
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny_config(attention="gqa")


def test_unknown_attention_variant_suggests_the_closest_name():
    with pytest.raises(AblateError, match="did you mean 'mha'"):
        tiny_config(attention="mhaa")
