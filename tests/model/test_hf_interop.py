"""Weights from Hugging Face GPT-2 and Llama models give the same logits in ablate."""

import inspect

import pytest
import torch

transformers = pytest.importorskip("transformers")

from harness.errors import AblateError  # noqa: E402
from harness.model.hf_fields import (  # noqa: E402
    GPT2_HONOURED,
    GPT2_REFUSED,
    LLAMA_HONOURED,
    LLAMA_REFUSED,
)
from harness.model.hf_interop import config_from_hf, from_hf, to_hf  # noqa: E402


def _gpt2(**change):
    config = transformers.GPT2Config(**{"vocab_size": 64, "n_positions": 32, "n_embd": 48, "n_layer": 3, "n_head": 4,
                                        "bos_token_id": 0, "eos_token_id": 0, **change})
    config.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _llama(n_kv_heads=2, tie=False, **change):
    config = transformers.LlamaConfig(**{
        "vocab_size": 64, "hidden_size": 48, "intermediate_size": 120, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": n_kv_heads, "max_position_embeddings": 32, "rope_theta": 500.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tie, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, **change})
    config.architectures = ["LlamaForCausalLM"]
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


# ---- every configuration field is honoured or refused ------------------------------------

FIELD_TABLES = {"GPT2Config": (GPT2_HONOURED, GPT2_REFUSED), "LlamaConfig": (LLAMA_HONOURED, LLAMA_REFUSED)}


@pytest.mark.parametrize("config_class", sorted(FIELD_TABLES))
def test_every_field_of_the_configuration_class_is_in_a_table(config_class):
    """A field `transformers` adds must be placed, honoured or refused, before it can be imported."""
    cls = getattr(transformers, config_class)
    fields = set(cls().to_dict()) | set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    fields |= set(cls.attribute_map.values())
    honoured, refused = FIELD_TABLES[config_class]
    placed = set(honoured) | set(refused)
    assert fields - placed == set()


HONOURED_VARIATIONS = [  # a non-default value of each honoured field that shapes the model
    (_gpt2, {"tie_word_embeddings": False}), (_gpt2, {"n_inner": 72}), (_gpt2, {"layer_norm_epsilon": 1e-2}),
    (_gpt2, {"activation_function": "gelu"}), (_gpt2, {"activation_function": "gelu_pytorch_tanh"}),
    (_gpt2, {"n_positions": 48}), (_gpt2, {"resid_pdrop": 0.3, "embd_pdrop": 0.3, "attn_pdrop": 0.3}),
    (_llama, {"rms_norm_eps": 1e-2}), (_llama, {"rope_theta": 50.0}), (_llama, {"head_dim": 12}),
    (_llama, {"max_position_embeddings": 64}), (_llama, {"attention_dropout": 0.3}),
]


def _id(value):
    return getattr(value, "__name__", None) or str(value)


@pytest.mark.parametrize("make,change", HONOURED_VARIATIONS, ids=_id)
def test_an_honoured_field_gives_the_logits_of_transformers(make, change):
    hf_model = make(**change)
    model = from_hf(hf_model)
    assert _max_logit_difference(hf_model, model) <= 1e-4


def test_an_untied_gpt2_head_is_its_own_weight_and_says_so():
    hf_model = _gpt2(tie_word_embeddings=False)
    model = from_hf(hf_model)
    assert model.cfg.tie_embeddings is False
    assert torch.equal(model.lm_head.weight, hf_model.lm_head.weight)
    assert not torch.equal(model.lm_head.weight, model.token_embedding.weight)


REFUSED_VALUES = [
    (_gpt2, "scale_attn_weights", False), (_gpt2, "scale_attn_by_inverse_layer_idx", True),
    (_gpt2, "reorder_and_upcast_attn", True), (_gpt2, "activation_function", "relu"),
    (_gpt2, "add_cross_attention", True), (_llama, "attention_bias", True), (_llama, "mlp_bias", True),
    (_llama, "hidden_act", "gelu"), (_llama, "pretraining_tp", 2), (_llama, "head_dim", 16),
    (_llama, "rope_parameters", {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
    (_gpt2, "sliding_window", 16), (_llama, "use_sliding_window", True),  # unknown to both tables
]


@pytest.mark.parametrize("make,field,value", REFUSED_VALUES, ids=_id)
def test_a_field_ablate_cannot_compute_is_refused_by_name(make, field, value):
    config = make().config
    setattr(config, field, value)
    with pytest.raises(AblateError) as refused:
        config_from_hf(config)
    assert f"{field}=" in str(refused.value) and repr(value)[:20] in str(refused.value)
