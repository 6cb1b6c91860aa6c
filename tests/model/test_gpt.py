"""The assembled GPT, over the product of slot choices."""

import itertools

import pytest
import torch

from harness.model.generate import generate
from harness.registry import variants
from tests.conftest import tiny_model

ATTENTION = ["mha", "mqa", {"name": "gqa", "n_kv_heads": 2}]
SLOT_PRODUCT = list(itertools.product(
    [v.name for v in variants("norm")],
    [v.name for v in variants("placement")],
    ATTENTION,
    [v.name for v in variants("mlp")],
    [v.name for v in variants("position")],
))
# init and dropout do not change the wiring; cycling them through the product covers them
INITS = [v.name for v in variants("init")]
DROPOUTS = ["constant", {"name": "depth_scaled", "p": 0.2}]


def _model(index, norm, placement, attention, mlp, position):
    return tiny_model(norm=norm, placement=placement, attention=attention, mlp=mlp, position=position,
                      init=INITS[index % len(INITS)], dropout=DROPOUTS[index % len(DROPOUTS)])


def _id(combo):
    return "-".join(c if isinstance(c, str) else f"gqa{c['n_kv_heads']}" for c in combo)


@pytest.mark.parametrize("index,combo", list(enumerate(SLOT_PRODUCT)), ids=[_id(c) for c in SLOT_PRODUCT])
def test_every_combination_is_causal_trainable_and_caches_exactly(index, combo):
    model = _model(index, *combo).eval()
    idx = torch.randint(0, 32, (2, 12))

    # causality: changing token t never changes the logits before t
    logits, _ = model(idx)
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 32
    changed_logits, _ = model(changed)
    torch.testing.assert_close(logits[:, :7], changed_logits[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(logits[:, 7:], changed_logits[:, 7:])

    # greedy generation with the KV cache equals recomputing the whole sequence each step,
    # including steps past the context length, where the window slides
    prompt = idx[:, :5]
    cached = generate(model, prompt, max_new_tokens=14, temperature=0.0, use_cache=True)
    recomputed = generate(model, prompt, max_new_tokens=14, temperature=0.0, use_cache=False)
    assert torch.equal(cached, recomputed)

    # training: finite loss, finite gradients reaching every parameter
    model.train()
    _, loss = model(idx[:, :-1], targets=idx[:, 1:])
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


def test_kv_cache_logits_match_the_full_forward_pass():
    model = tiny_model(attention={"name": "gqa", "n_kv_heads": 2}, position="rope").eval()
    idx = torch.randint(0, 32, (2, 10))
    full, _ = model(idx)
    cache = model.new_cache(batch=2)
    step_logits = [model(idx[:, :4], cache=cache)[0]]
    step_logits += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full, rtol=0, atol=1e-5)


def test_sequences_longer_than_the_context_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gradient_checkpointing_gives_the_same_gradients():
    idx = torch.randint(0, 32, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(gradient_checkpointing=checkpointing)
        _, loss = model(idx[:, :-1], targets=idx[:, 1:])
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_tied_embeddings_share_one_matrix_and_untied_do_not():
    tied, untied = tiny_model(tie_embeddings=True), tiny_model(tie_embeddings=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.lm_head.weight is not untied.token_embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == 32 * 32


def test_bias_switch_removes_every_bias():
    model = tiny_model(bias=False, norm="layernorm")
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]


def test_parameter_counts_match_the_gpt2_formula():
    # GPT-2 block: 12 d^2 weights + 13 d biases and gains; embeddings V d + T d; final norm 2 d
    d, layers, vocab, context = 32, 2, 32, 16
    model = tiny_model()
    block = 12 * d * d + 13 * d
    assert model.num_parameters() == layers * block + vocab * d + context * d + 2 * d
    assert model.num_parameters(non_embedding=True) == layers * block + 2 * d


def test_flops_per_token_follow_the_6n_plus_attention_rule():
    model = tiny_model()
    n_matmul = model.num_parameters(non_embedding=True) - 2 * 32 - 2 * 13 * 32 + 32 * 32  # weights + head
    expected = 6 * n_matmul + 12 * 2 * 32 * 16
    assert model.flops_per_token() == expected
    assert model.flops_per_token(training=False) * 3 == expected
