"""Every attention backend computes the same function as the explicit `math` reference."""

import pytest
import torch

from harness.model.attention import AttentionKernel, backend, backend_names
from harness.registry import variants
from tests.conftest import tiny_model


def _available(name, q, bias):
    return backend(name).unavailable(q, bias, 0.0) is None


CASES = [  # (query heads, kv heads, query length, key length)
    (4, 4, 9, 9), (4, 2, 9, 9), (4, 1, 9, 9),  # full sequence: MHA, GQA, MQA
    (4, 2, 1, 9),  # one cached decoding step
    (4, 1, 3, 9),  # a chunk after a cached prefix: the causal mask is aligned bottom-right
]


@pytest.mark.parametrize("name", [v.name for v in variants("attention_backend") if v.name != "math"])
@pytest.mark.parametrize("heads,kv_heads,q_len,k_len", CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_backend_matches_math_reference(name, heads, kv_heads, q_len, k_len, with_bias):
    if with_bias and name == "triton":
        return  # it declines a bias: tests/kernels/test_kernels.py checks the hand-over
    q = torch.randn(2, heads, q_len, 8)
    k, v = torch.randn(2, 2, kv_heads, k_len, 8).unbind(0)
    bias = torch.randn(1, heads, q_len, k_len) if with_bias else None
    if not _available(name, q, bias):
        pytest.skip(f"{name} cannot run here: {backend(name).unavailable(q, bias, 0.0)}")
    reference = backend("math")(q, k, v, bias=bias, causal=True, dropout_p=0.0, scale=8 ** -0.5)
    out = backend(name)(q, k, v, bias=bias, causal=True, dropout_p=0.0, scale=8 ** -0.5)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_math_reference_is_plain_causal_softmax_attention():
    q, k, v = torch.randn(3, 1, 1, 5, 4).unbind(0)
    out = backend("math")(q, k, v, bias=None, causal=True, dropout_p=0.0, scale=0.5)
    for t in range(5):
        weights = torch.softmax((q[0, 0, t] @ k[0, 0, : t + 1].T) * 0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, t], weights @ v[0, 0, : t + 1])


@pytest.mark.parametrize("name", backend_names())
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_whole_model_gives_the_same_logits_under_every_backend(name, position):
    idx = torch.randint(0, 32, (2, 12))
    reference, _ = tiny_model(attention_backend="math", position=position).eval()(idx)
    model = tiny_model(attention_backend=name, position=position).eval()
    logits, _ = model(idx)
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    assert model.attention_kernel.used, "the backend that ran is recorded"


def test_auto_on_cpu_runs_sdpa_and_says_why_flash_attn_was_passed_over():
    kernel = AttentionKernel("auto")
    kernel(*torch.randn(3, 1, 2, 4, 8).unbind(0))
    report = kernel.report()
    assert report["attention_backend"] == "sdpa"
    assert "flash_attn:" in report["attention_backend_fallbacks"]


def test_an_explicit_backend_that_cannot_serve_falls_back_and_records_it():
    kernel = AttentionKernel("flash_attn")
    kernel(*torch.randn(3, 1, 2, 4, 8).unbind(0))
    assert kernel.used == ["sdpa"]
    assert kernel.fallbacks and kernel.fallbacks[0].startswith("flash_attn:")


def test_alibi_gets_a_backend_that_takes_a_bias():
    model = tiny_model(position="alibi", attention_backend="auto").eval()
    model(torch.randint(0, 32, (1, 8)))
    assert model.attention_kernel.used == ["sdpa"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: flash-attn and bf16 kernels run only on a GPU")
def test_flash_attn_matches_math_in_bf16_on_cuda():
    pytest.importorskip("flash_attn")
    q = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 2, 2, 64, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    reference = backend("math")(q.float(), k.float(), v.float(), bias=None, causal=True, dropout_p=0.0, scale=0.125)
    out = backend("flash_attn")(q, k, v, bias=None, causal=True, dropout_p=0.0, scale=0.125)
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=2e-2)
