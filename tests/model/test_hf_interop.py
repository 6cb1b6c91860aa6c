"""Weights from Hugging Face GPT-2 and Llama models give the same logits in ablate."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from harness.model.hf_interop import from_hf, to_hf  # noqa: E402


def _gpt2():
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=48, n_layer=3, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _llama(n_kv_heads=2, tie=False):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=120, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=n_kv_heads, max_position_embeddings=32,
                                      rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # HF starts norms at 1; random gains make a mix-up of norms visible
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def _max_logit_difference(hf_model, model):
    idx = torch.randint(0, 64, (2, 32))
    with torch.no_grad():
        return (hf_model(idx).logits - model(idx)[0]).abs().max().item()


def test_gpt2_weights_give_identical_logits():
    hf_model = _gpt2()
    model = from_hf(hf_model)
    assert model.cfg.norm.name == "layernorm" and model.cfg.position.name == "learned"
    assert _max_logit_difference(hf_model, model) <= 1e-4


@pytest.mark.parametrize("n_kv_heads,attention", [(2, "gqa"), (4, "mha"), (1, "gqa")])
@pytest.mark.parametrize("tie", [False, True])
def test_llama_weights_give_identical_logits(n_kv_heads, attention, tie):
    hf_model = _llama(n_kv_heads, tie)
    model = from_hf(hf_model)
    assert (model.cfg.norm.name, model.cfg.mlp.name, model.cfg.position.name) == ("rmsnorm", "swiglu", "rope")
    assert model.cfg.attention.name == attention
    assert model.num_parameters() == sum(p.numel() for p in hf_model.parameters())
    assert _max_logit_difference(hf_model, model) <= 1e-4


@pytest.mark.parametrize("make", [_gpt2, _llama])
def test_export_back_to_hugging_face_round_trips(make):
    original = make()
    model = from_hf(original)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    exported = type(original)(original.config).eval()
    to_hf(model, exported)
    assert _max_logit_difference(exported, model) <= 1e-4
    assert _max_logit_difference(original, model) > 1e-3
