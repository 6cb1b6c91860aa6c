"""Pretrained weights as a starting point: a Hugging Face GPT-2 or Llama saved with
`save_pretrained` (`init_from: hf:DIR`) gives the logits `transformers` gives, then trains; a
model id the cache lacks is one message naming the cache; LoRA trains only its adapters and
merges them into plain weights."""

import subprocess

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from harness import Study  # noqa: E402
from harness.errors import AblateError  # noqa: E402
from harness.training.checkpoint import model_from_checkpoint  # noqa: E402
from harness.training.observer import Observer  # noqa: E402
from harness.training.trainer import Trainer  # noqa: E402

from tests import warm

CORPUS = "the quick brown fox jumps over the lazy dog. " * 400


def _save_gpt2(folder, **change):
    config = transformers.GPT2Config(**{"vocab_size": 96, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4,
                                        "bos_token_id": 0, "eos_token_id": 0, "architectures": ["GPT2LMHeadModel"],
                                        **change})
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def _save_llama(folder):
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      rope_theta=500.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                                      pad_token_id=0, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


def _study(tmp_path, train: str, context: int = 32) -> Study:
    (tmp_path / "corpus.txt").write_text(CORPUS)
    (tmp_path / "study.yaml").write_text(f"""
name: pretrained
base:
  model: {{context_length: {context}}}
  train: {{steps: 6, batch_size: 4, eval_interval: 6, log_interval: 2, lr: 1e-3, {train}}}
data: {{dataset: {{name: text, path: {tmp_path / 'corpus.txt'}}}, val_windows: 4}}
""")
    return Study.load(tmp_path / "study.yaml", runs_dir=tmp_path / "runs")


def _save_untied_gpt2(folder):
    return _save_gpt2(folder, tie_word_embeddings=False)


@pytest.mark.parametrize("save", [_save_gpt2, _save_untied_gpt2, _save_llama], ids=["gpt2", "gpt2-untied", "llama"])
def test_a_saved_hugging_face_model_starts_a_run_with_its_own_logits_then_trains(tmp_path, save):
    hf_model = save(tmp_path / "hf")
    study = _study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}'")
    [spec] = study.runs
    assert spec.model.n_layer == 2 and spec.model.d_model == 32 and spec.model.context_length == 32
    assert spec.model.tie_embeddings == hf_model.config.tie_word_embeddings
    assert spec.sources["init_from"].startswith(f"{tmp_path / 'hf'}@sha256:")
    trainer = Trainer(spec, tmp_path / "run")
    idx = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        ours = trainer.model.eval()(idx)[0]
        assert (ours - hf_model(idx).logits).abs().max().item() <= 1e-4
    result = trainer.run()
    assert result.steps == 6 and result.info["init_from_model"] == str(tmp_path / "hf")
    assert result.info["init_from_revision"].startswith("sha256:")
    assert result.info["params_trainable"] == result.info["params"]


def test_other_weights_in_the_same_folder_make_another_run(tmp_path):
    _save_gpt2(tmp_path / "hf")
    before = _study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}'").runs[0].key()
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        hf_model.transformer.wte.weight[0] += 1
    hf_model.save_pretrained(tmp_path / "hf")
    assert _study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}'").runs[0].key() != before


def test_a_model_id_missing_from_the_cache_names_the_cache_and_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "study.yaml").write_text(
        "name: offline\nbase: {train: {steps: 2, init_from: 'hf:ablate-test/no-such-model'}}\n")
    result = subprocess.run([*warm.command(), "run", "study.yaml", "--dry-run"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "ablate-test/no-such-model" in result.stderr and str(tmp_path / "hf-home" / "hub") in result.stderr


class LastLook(Observer):
    """Before the adapters are merged (the last evaluation comes first): the adapted model's
    logits, and whether every frozen weight is still bit-identical."""

    def __init__(self, trainer_box: dict, idx: torch.Tensor, frozen: dict):
        self.box, self.idx, self.frozen = trainer_box, idx, frozen
        self.logits, self.moved = None, None

    def on_metrics(self, step, metrics):
        trainer = self.box["trainer"]
        if "val_loss" in metrics and step == trainer.cfg.steps:
            parameters = dict(trainer.model.named_parameters())
            self.moved = [name for name, before in self.frozen.items() if not torch.equal(parameters[name], before)]
            with torch.no_grad():
                self.logits = trainer.model(self.idx)[0].clone()


def test_lora_trains_only_the_adapters_and_its_merged_model_gives_the_adapted_logits(tmp_path):
    _save_gpt2(tmp_path / "hf")
    study = _study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}', lora: {{rank: 4, alpha: 8}}, lr: 1e-2")
    idx = torch.randint(0, 96, (2, 32))
    box = {}
    look = LastLook(box, idx, {})
    trainer = box["trainer"] = Trainer(study.runs[0], tmp_path / "run", look)
    look.frozen = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if not p.requires_grad}
    adapters = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert adapters and all("lora_" in name for name in adapters)
    assert any(".attention." in name for name in adapters) and any(".mlp." in name for name in adapters)
    assert any(name.endswith("qkv.base_layer.weight") for name in look.frozen)
    # 2 blocks x (qkv 32->96, out 32->32, up 32->128, down 128->32), rank 4: A is r x in, B is out x r
    assert trainer.info()["params_trainable"] == 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    with torch.no_grad():
        start = trainer.model.eval()(idx)[0].clone()
    result = trainer.run()
    assert result.info["params_trainable"] < result.info["params"] / 5
    assert look.moved == [], look.moved
    assert (look.logits - start).abs().max() > 1e-3  # the adapters did learn something
    merged, _ = model_from_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        assert (merged(idx)[0] - look.logits).abs().max().item() <= 1e-4

    # killed after the final checkpoint, before MLflow heard of the end: the resume trains nothing
    resumed = Trainer(study.runs[0], tmp_path / "run")
    again = resumed.run()
    assert again.metrics["steps_trained"] == 0 and again.info["params_trainable"] == result.info["params_trainable"]
    with torch.no_grad():
        assert torch.equal(resumed.model(idx)[0], merged(idx)[0])


def _save_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator([CORPUS], trainers.BpeTrainer(vocab_size=60, show_progress=False))
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


@pytest.mark.parametrize("tie", [True, False])
def test_the_model_s_own_tokenizer_comes_with_it_and_generate_samples_what_transformers_samples(tmp_path, tie):
    hf_model = _save_gpt2(tmp_path / "hf", tie_word_embeddings=tie)
    tokenizer = _save_tokenizer(tmp_path / "hf")
    trainer = Trainer(_study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}'").runs[0], tmp_path / "run")
    assert trainer.dataset.tokenizer.kind == "hf" and trainer.dataset.vocab_size == tokenizer.get_vocab_size()
    assert trainer.dataset.tokenizer.encode("the lazy dog") == tokenizer.encode("the lazy dog").ids

    prompt = tokenizer.encode("the quick").ids
    with torch.no_grad():
        # ablate samples only ids the tokenizer can write (the model's vocabulary is larger)
        greedy = hf_model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0,
                                   suppress_tokens=list(range(tokenizer.get_vocab_size(), 96)))
    sampled = subprocess.run([*warm.command(), "generate", f"hf:{tmp_path / 'hf'}", "--prompt",
                              "the quick", "--temperature", "0", "--max-new-tokens", "8"],
                             capture_output=True, text=True, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.rstrip("\n") == tokenizer.decode(greedy[0].tolist())


@pytest.mark.parametrize("field,value", [("scale_attn_weights", False), ("sliding_window", 16)])
def test_a_saved_model_with_a_field_ablate_cannot_compute_is_refused_by_generate_and_init_from(tmp_path, field, value):
    _save_gpt2(tmp_path / "hf", **{field: value})
    generate = subprocess.run([*warm.command(), "generate", f"hf:{tmp_path / 'hf'}", "--prompt", "the"],
                              capture_output=True, text=True, timeout=120)
    assert generate.returncode == 2 and "Traceback" not in generate.stderr, generate.stderr
    assert f"{field}={value!r}" in generate.stderr and len(generate.stderr.strip().splitlines()) == 1, generate.stderr
    with pytest.raises(AblateError, match=f"{field}={value!r}"):
        _study(tmp_path, f"init_from: 'hf:{tmp_path / 'hf'}'")


def test_a_tokenizer_larger_than_the_model_is_refused_by_generate(tmp_path):
    _save_gpt2(tmp_path / "hf", vocab_size=8)
    tokenizer = _save_tokenizer(tmp_path / "hf")
    generate = subprocess.run([*warm.command(), "generate", f"hf:{tmp_path / 'hf'}", "--prompt", "the"],
                              capture_output=True, text=True, timeout=120)
    assert generate.returncode == 2 and "Traceback" not in generate.stderr, generate.stderr
    assert f"its tokenizer has {tokenizer.get_vocab_size()} tokens for a model of 8" in generate.stderr


@pytest.mark.parametrize("model,words", [
    ("n_layer: 1, context_length: 32", "model.n_layer = 1 differs from the 2 of hf:"),
    ("norm: rmsnorm, context_length: 32", "model.norm = rmsnorm differs from the layernorm of hf:"),
])
def test_a_model_setting_the_weights_fix_is_refused_not_dropped(tmp_path, model, words):
    """A study's model settings beside `init_from: hf:` were dropped without a word: arms that
    differed only there trained the same model under different names."""
    _save_gpt2(tmp_path / "hf")
    (tmp_path / "corpus.txt").write_text(CORPUS)
    (tmp_path / "study.yaml").write_text(f"""
name: pretrained
base:
  model: {{{model}}}
  train: {{steps: 6, batch_size: 4, init_from: 'hf:{tmp_path / 'hf'}'}}
data: {{dataset: {{name: text, path: {tmp_path / 'corpus.txt'}}}, val_windows: 4}}
""")
    with pytest.raises(AblateError, match=words):
        Study.load(tmp_path / "study.yaml", runs_dir=tmp_path / "runs")
