"""Our Triton kernels against their torch references, forward and backward.

On the CPU they run under Triton's interpreter (the conftest sets TRITON_INTERPRET=1);
on a GPU the same tests run the compiled kernels, in fp32 and bf16.
"""

import pytest
import torch

from harness.kernels import FusedOp
from harness.model.attention import AttentionKernel, backend

pytest.importorskip("triton", reason="the Triton kernels need triton (pip install -e '.[test]')")

from harness.kernels.flash_attention import flash_attention  # noqa: E402
from harness.kernels.references import rms_norm_reference, swiglu_reference  # noqa: E402
from harness.kernels.rmsnorm import rms_norm  # noqa: E402
from harness.kernels.swiglu import swiglu  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (device, dtype) pairs: bf16 only where the kernels are compiled
SETTINGS = [(d, torch.float32) for d in DEVICES] + [("cuda", torch.bfloat16)] * torch.cuda.is_available()


def _tolerance(dtype):
    return dict(rtol=0, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


def _grads(fn, inputs, upstream):
    """Output and input gradients of fn(*inputs) for the given upstream gradient."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(upstream)
    return out.detach(), [leaf.grad for leaf in leaves]


def _check_against_reference(kernel, reference, inputs, dtype):
    out = reference(*inputs)
    upstream = torch.randn_like(out)
    got, got_grads = _grads(kernel, inputs, upstream)
    want, want_grads = _grads(reference, inputs, upstream)
    assert got.dtype == want.dtype
    tolerance = _tolerance(dtype)
    torch.testing.assert_close(got.float(), want.float(), **tolerance)
    for got_grad, want_grad in zip(got_grads, want_grads):
        torch.testing.assert_close(got_grad.float(), want_grad.float(), **tolerance)


@pytest.mark.parametrize("device,dtype", SETTINGS)
@pytest.mark.parametrize("shape", [(4, 32), (3, 5, 48), (2, 7, 100)])  # widths below, at and off a power of two
def test_rmsnorm_matches_torch_forward_and_backward(device, dtype, shape):
    x = torch.randn(shape, device=device, dtype=dtype)
    weight = torch.randn(shape[-1], device=device, dtype=dtype)
    _check_against_reference(lambda x, w: rms_norm(x, w, 1e-6), lambda x, w: rms_norm_reference(x, w, 1e-6),
                             (x, weight), dtype)


@pytest.mark.parametrize("device,dtype", SETTINGS)
@pytest.mark.parametrize("shape", [(4, 2 * 32), (3, 5, 2 * 40), (2, 3, 2 * 1500)])  # the last spans two blocks
def test_swiglu_matches_torch_forward_and_backward(device, dtype, shape):
    gate_up = torch.randn(shape, device=device, dtype=dtype)
    _check_against_reference(swiglu, swiglu_reference, (gate_up,), dtype)


def test_swiglu_rejects_an_odd_projection():
    with pytest.raises(ValueError, match="must be even"):
        swiglu(torch.randn(2, 5))


ATTENTION_CASES = [  # (heads, kv heads, query length, key length, head dim, causal)
    (4, 4, 40, 40, 16, True),  # MHA across several 16-row tiles with a ragged last one
    (4, 2, 37, 37, 24, True),  # GQA with a head dim that is not a power of two
    (4, 1, 33, 33, 32, True),  # MQA
    (4, 2, 5, 45, 16, True),  # a chunk after a cached prefix: mask aligned bottom-right
    (2, 2, 1, 33, 16, True),  # one decoding step
    (2, 1, 20, 20, 16, False),  # no mask
]


@pytest.mark.parametrize("device,dtype", SETTINGS)
@pytest.mark.parametrize("heads,kv_heads,q_len,k_len,head_dim,causal", ATTENTION_CASES)
def test_flash_attention_matches_math_forward_and_backward(device, dtype, heads, kv_heads, q_len, k_len, head_dim, causal):
    q = torch.randn(2, heads, q_len, head_dim, device=device, dtype=dtype)
    k, v = torch.randn(2, 2, kv_heads, k_len, head_dim, device=device, dtype=dtype).unbind(0)
    scale = head_dim ** -0.5

    def reference(q, k, v):
        return backend("math")(q, k, v, bias=None, causal=causal, dropout_p=0.0, scale=scale)

    _check_against_reference(lambda q, k, v: flash_attention(q, k, v, scale, causal), reference, (q, k, v), dtype)


@pytest.mark.parametrize("bias,dropout_p,reason", [
    (torch.zeros(1, 2, 4, 4), 0.0, "no additive attention bias"),
    (None, 0.1, "no attention dropout"),
])
def test_triton_attention_hands_bias_and_dropout_to_sdpa_and_says_why(bias, dropout_p, reason):
    kernel = AttentionKernel("triton")
    q, k, v = torch.randn(3, 1, 2, 4, 8).unbind(0)
    kernel(q, k, v, bias=bias, dropout_p=dropout_p)
    assert kernel.used == ["sdpa"]
    assert reason in kernel.report()["attention_backend_fallbacks"]


def test_a_triton_request_falls_back_to_torch_where_triton_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    op = FusedOp("rmsnorm", "triton")
    x, weight = torch.randn(2, 8), torch.randn(8)
    torch.testing.assert_close(op(x, weight, 1e-6), rms_norm_reference(x, weight, 1e-6), rtol=0, atol=0)
    assert op.used == ["torch"]
    assert "TRITON_INTERPRET=1" in op.fallbacks[0]


def test_a_triton_request_runs_the_kernel_where_it_can():
    op = FusedOp("swiglu", "triton")
    gate_up = torch.randn(3, 2 * 20)
    torch.testing.assert_close(op(gate_up), swiglu_reference(gate_up), rtol=0, atol=1e-6)
    assert op.used == ["triton"] and op.fallbacks == []


def test_torch_requests_never_touch_triton():
    op = FusedOp("swiglu", "torch")
    gate_up = torch.randn(2, 4)
    torch.testing.assert_close(op(gate_up), swiglu_reference(gate_up), rtol=0, atol=0)
    assert op.used == ["torch"] and op.fallbacks == []
