"""Every field of a Hugging Face GPT-2 or Llama configuration, and what the import does with it.

A field is *honoured* (it becomes part of the ablate configuration, or it provably does not
change the logits: output switches, classification heads, provenance, token ids, training-time
dropout, which the run's own `model.dropout` decides) or *refused* unless it holds the one value
ablate computes alike. A field in neither table (a newer `transformers`, a fork's extra field)
is refused too: nothing in a configuration is silently ignored. The tables are enumerated
against the configuration classes by the tests, so a new field must be placed in one of them.
"""

from __future__ import annotations

from harness.errors import AblateError

# fields of PretrainedConfig that every architecture has; none changes a causal LM's logits
_COMMON_HONOURED = {
    "architectures": "picks the correspondence table", "model_type": "picks the correspondence table",
    "tie_word_embeddings": "tie_embeddings",
    "dtype": "weights are loaded into the run's own dtype", "torch_dtype": "weights are loaded into the run's own dtype",
    "_name_or_path": "provenance", "transformers_version": "provenance",
    "output_attentions": "output switch", "output_hidden_states": "output switch", "return_dict": "output switch",
    "use_cache": "output switch (ablate generate keeps its own KV cache)", "torchscript": "export switch",
    "chunk_size_feed_forward": "memory chunking; the same result",
    "id2label": "classification heads", "label2id": "classification heads", "problem_type": "classification heads",
    "finetuning_task": "classification heads",
    "bos_token_id": "the tokenizer's", "eos_token_id": "the tokenizer's", "pad_token_id": "the tokenizer's",
    "sep_token_id": "the tokenizer's", "decoder_start_token_id": "the tokenizer's", "tokenizer_class": "the tokenizer's",
    "prefix": "the tokenizer's", "task_specific_params": "generation presets (ablate generate takes its own)",
    "initializer_range": "weights are loaded, not initialised", "is_decoder": "a causal LM is a decoder",
    "tie_encoder_decoder": "encoder-decoders are refused (is_encoder_decoder)",
    "cross_attention_hidden_size": "cross-attention is refused (add_cross_attention)",
}
_COMMON_REFUSED = {"is_encoder_decoder": (False,), "add_cross_attention": (False,), "pruned_heads": ({},)}

GPT2_HONOURED = {
    **_COMMON_HONOURED,
    "vocab_size": "vocab_size", "n_positions": "context_length", "n_embd": "d_model", "n_layer": "n_layer",
    "n_head": "n_head", "n_inner": "mlp.hidden_dim", "activation_function": "mlp.approximate",
    "layer_norm_epsilon": "norm.eps",
    "n_ctx": "unused by transformers' GPT-2 (n_positions sizes the model)",
    "resid_pdrop": "training-time dropout: the run's model.dropout", "embd_pdrop": "training-time dropout: the run's model.dropout",
    "attn_pdrop": "training-time dropout: the run's model.dropout",
    "summary_type": "classification heads", "summary_use_proj": "classification heads",
    "summary_activation": "classification heads", "summary_proj_to_labels": "classification heads",
    "summary_first_dropout": "classification heads",
}
GPT2_REFUSED = {
    **_COMMON_REFUSED,
    "activation_function": ("gelu_new", "gelu_pytorch_tanh", "gelu"),
    "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,),
}

LLAMA_HONOURED = {
    **_COMMON_HONOURED,
    "vocab_size": "vocab_size", "hidden_size": "d_model", "intermediate_size": "mlp.hidden_dim",
    "num_hidden_layers": "n_layer", "num_attention_heads": "n_head", "num_key_value_heads": "attention",
    "max_position_embeddings": "context_length", "rms_norm_eps": "norm.eps", "head_dim": "d_model / n_head",
    "rope_parameters": "position.theta", "rope_theta": "position.theta", "rope_scaling": "position.theta",
    "hidden_act": "mlp", "attention_dropout": "training-time dropout: the run's model.dropout",
}
LLAMA_REFUSED = {
    **_COMMON_REFUSED,
    "hidden_act": ("silu",), "attention_bias": (False,), "mlp_bias": (False,), "pretraining_tp": (1,),
    "rope_scaling": (None,),
}

def check_fields(hf_config, honoured: dict[str, str], refused: dict[str, tuple]) -> None:
    """Raise AblateError naming the first field of `hf_config` that is refused (a value other
    than the accepted ones) or unknown to both tables."""
    from transformers import GenerationConfig

    # generation settings (ablate generate takes its own): transformers keeps them in a
    # GenerationConfig now, older config.json files still carry them
    generation = set(GenerationConfig().to_dict())
    architecture = (hf_config.architectures or [hf_config.model_type])[0]
    for field, value in sorted(hf_config.to_dict().items()):
        if field in refused and value not in refused[field]:
            accepted = " or ".join(repr(v) for v in refused[field])
            raise AblateError(f"{architecture} config field {field}={value!r} is not supported (ablate computes "
                              f"only {field}={accepted}); the import would give other logits")
        if field not in honoured and field not in refused and field not in generation:
            raise AblateError(f"{architecture} config field {field}={value!r} is unknown to ablate's import: it may "
                              "change the computation, so the model is not imported")
