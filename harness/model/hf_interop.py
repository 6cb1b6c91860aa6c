"""Weights to and from Hugging Face `transformers`.

``GPT2LMHeadModel`` maps onto (pre, layernorm, mha, gelu-tanh, learned, tied) and
``LlamaForCausalLM`` onto (pre, rmsnorm, mha/gqa/mqa, swiglu, rope). Both directions use one
table of correspondences per architecture, so import and export cannot drift apart; every
configuration field is honoured or refused (harness.model.hf_fields).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.config.model import ModelConfig
from harness.errors import AblateError
from harness.model.gpt import GPT
from harness.model.hf_fields import GPT2_HONOURED, GPT2_REFUSED, LLAMA_HONOURED, LLAMA_REFUSED, check_fields


@dataclass(frozen=True)
class Correspondence:
    """Our tensor `ours` is their tensors `theirs` stacked along dim 0 (after transposing
    each one when they store it as (in, out), like GPT-2's Conv1D)."""

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False

    def to_ours(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [state[name].t() if self.transpose else state[name] for name in self.theirs]
        return torch.cat(parts, dim=0)

    def to_theirs(self, tensor: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        sizes = [shapes[name][-1 if self.transpose else 0] for name in self.theirs]
        parts = tensor.split(sizes, dim=0)
        return {name: (part.t() if self.transpose else part).contiguous() for name, part in zip(self.theirs, parts)}


def _gpt2_correspondences(cfg: ModelConfig) -> list[Correspondence]:
    table = [
        Correspondence("token_embedding.weight", ("transformer.wte.weight",)),
        Correspondence("position.table.weight", ("transformer.wpe.weight",)),
        Correspondence("final_norm.weight", ("transformer.ln_f.weight",)),
        Correspondence("final_norm.bias", ("transformer.ln_f.bias",)),
    ]
    if not cfg.tie_embeddings:
        table.append(Correspondence("lm_head.weight", ("lm_head.weight",)))
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for our_name, their_name, transpose in [
            ("attention_norm", "ln_1", False), ("attention.qkv", "attn.c_attn", True),
            ("attention.out", "attn.c_proj", True), ("mlp_norm", "ln_2", False),
            ("mlp.up", "mlp.c_fc", True), ("mlp.down", "mlp.c_proj", True),
        ]:
            table.append(Correspondence(f"{ours}{our_name}.weight", (f"{theirs}{their_name}.weight",), transpose))
            table.append(Correspondence(f"{ours}{our_name}.bias", (f"{theirs}{their_name}.bias",)))
    return table


def _llama_correspondences(cfg: ModelConfig) -> list[Correspondence]:
    table = [
        Correspondence("token_embedding.weight", ("model.embed_tokens.weight",)),
        Correspondence("final_norm.weight", ("model.norm.weight",)),
    ]
    if not cfg.tie_embeddings:
        table.append(Correspondence("lm_head.weight", ("lm_head.weight",)))
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        table += [
            Correspondence(f"{ours}attention_norm.weight", (f"{theirs}input_layernorm.weight",)),
            Correspondence(f"{ours}attention.qkv.weight", tuple(f"{theirs}self_attn.{p}_proj.weight" for p in "qkv")),
            Correspondence(f"{ours}attention.out.weight", (f"{theirs}self_attn.o_proj.weight",)),
            Correspondence(f"{ours}mlp_norm.weight", (f"{theirs}post_attention_layernorm.weight",)),
            Correspondence(f"{ours}mlp.gate_up.weight", (f"{theirs}mlp.gate_proj.weight", f"{theirs}mlp.up_proj.weight")),
            Correspondence(f"{ours}mlp.down.weight", (f"{theirs}mlp.down_proj.weight",)),
        ]
    return table


def gpt2_config(hf_config) -> ModelConfig:
    """The ablate configuration of a `GPT2Config`; AblateError for a field it cannot honour
    (harness.model.hf_fields)."""
    check_fields(hf_config, GPT2_HONOURED, GPT2_REFUSED)
    activations = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
    return ModelConfig(
        vocab_size=hf_config.vocab_size, context_length=hf_config.n_positions, n_layer=hf_config.n_layer,
        n_head=hf_config.n_head, d_model=hf_config.n_embd, bias=True, tie_embeddings=hf_config.tie_word_embeddings,
        norm={"name": "layernorm", "eps": hf_config.layer_norm_epsilon}, placement="pre", attention="mha",
        mlp={"name": "gelu", "approximate": activations[hf_config.activation_function],
             "hidden_dim": hf_config.n_inner or 4 * hf_config.n_embd},
        position="learned", init="gpt2", dropout="constant",
    )


def llama_config(hf_config) -> ModelConfig:
    """The ablate configuration of a `LlamaConfig`; AblateError for a field it cannot honour
    (harness.model.hf_fields)."""
    check_fields(hf_config, LLAMA_HONOURED, LLAMA_REFUSED)
    rope = getattr(hf_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": hf_config.rope_theta}
    if rope.get("rope_type", "default") != "default" or set(rope) - {"rope_type", "rope_theta"}:
        raise AblateError(f"LlamaForCausalLM config field rope_parameters={rope!r} is not supported (ablate computes "
                          "only plain RoPE: rope_type 'default' and a rope_theta)")
    if hf_config.head_dim * hf_config.num_attention_heads != hf_config.hidden_size:
        raise AblateError(f"LlamaForCausalLM config field head_dim={hf_config.head_dim!r} is not supported (ablate "
                          f"computes only head_dim = hidden_size / num_attention_heads = "
                          f"{hf_config.hidden_size / hf_config.num_attention_heads:g})")
    n_kv = hf_config.num_key_value_heads
    attention = "mha" if n_kv == hf_config.num_attention_heads else {"name": "gqa", "n_kv_heads": n_kv}
    return ModelConfig(
        vocab_size=hf_config.vocab_size, context_length=hf_config.max_position_embeddings,
        n_layer=hf_config.num_hidden_layers, n_head=hf_config.num_attention_heads, d_model=hf_config.hidden_size,
        bias=False, tie_embeddings=hf_config.tie_word_embeddings,
        norm={"name": "rmsnorm", "eps": hf_config.rms_norm_eps}, placement="pre", attention=attention,
        mlp={"name": "swiglu", "hidden_dim": hf_config.intermediate_size},
        position={"name": "rope", "theta": rope["rope_theta"]}, init="normal", dropout="constant",
    )


_ARCHITECTURES = {
    "GPT2LMHeadModel": (gpt2_config, _gpt2_correspondences),
    "LlamaForCausalLM": (llama_config, _llama_correspondences),
}


def _architecture(hf_model):
    name = type(hf_model).__name__
    if name not in _ARCHITECTURES:
        raise AblateError(f"cannot convert {name}; supported: {', '.join(_ARCHITECTURES)}")
    return _ARCHITECTURES[name]


def from_hf(hf_model) -> GPT:
    """An ablate GPT with the weights of a GPT2LMHeadModel or LlamaForCausalLM."""
    make_config, _ = _architecture(hf_model)
    model = GPT(make_config(hf_model.config))
    load_hf_weights(model, hf_model)
    return model.eval()


def load_hf_weights(model: GPT, hf_model) -> None:
    """Copy a Hugging Face model's weights into `model`, an ablate GPT of the matching
    architecture whose context may be shorter (a learned position table keeps its first rows)."""
    _, correspondences = _architecture(hf_model)
    cfg = model.cfg
    theirs = hf_model.state_dict()
    ours = {c.ours: c.to_ours(theirs) for c in correspondences(cfg)}
    if "position.table.weight" in ours:
        ours["position.table.weight"] = ours["position.table.weight"][: cfg.context_length]
    missing, unexpected = model.load_state_dict(ours, strict=False)
    # the tied head is the embedding: nothing else may be left unloaded
    missing = [name for name in missing if not (cfg.tie_embeddings and name == "lm_head.weight")]
    if missing or unexpected:
        raise AblateError(f"weights did not line up: missing {missing}, unexpected {unexpected}")


def config_from_hf(hf_config) -> ModelConfig:
    """The ablate configuration of a Hugging Face GPT-2 or Llama configuration."""
    architectures = [name for name in hf_config.architectures or [] if name in _ARCHITECTURES]
    if not architectures:
        raise AblateError(f"cannot start from a {', '.join(hf_config.architectures or [hf_config.model_type])}; "
                          f"supported: {', '.join(_ARCHITECTURES)}")
    return _ARCHITECTURES[architectures[0]][0](hf_config)


def to_hf(model: GPT, hf_model) -> None:
    """Copy an ablate GPT's weights into a Hugging Face model of the matching shape."""
    _, correspondences = _architecture(hf_model)
    ours = model.state_dict()
    shapes = {name: tensor.shape for name, tensor in hf_model.state_dict().items()}
    theirs = {}
    for c in correspondences(model.cfg):
        theirs.update(c.to_theirs(ours[c.ours], shapes))
    missing, unexpected = hf_model.load_state_dict(theirs, strict=False)
    missing = [name for name in missing if name != "lm_head.weight" or not model.cfg.tie_embeddings]
    if missing or unexpected:
        raise AblateError(f"weights did not line up: missing {missing}, unexpected {unexpected}")
