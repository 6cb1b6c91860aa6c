"""The plan: what a run's configuration says is what it trains, and what it cannot train is
refused before anything starts."""

import pytest

from harness import Study
from harness.errors import AblateError
from harness.training.trainer import Trainer

STUDY = """
name: vocab
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 2, batch_size: 2, log_interval: 1, eval_interval: 2}
data: {val_windows: 2}
"""


def _study(tmp_path, *overrides):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return Study.load(path, list(overrides), runs_dir=tmp_path / "runs")


def _tokens(study):
    return next(iter(study.inputs.datasets.values())).vocab_size


def test_the_vocabulary_is_the_tokenizers_unless_the_study_pads_it(tmp_path):
    plain = _study(tmp_path)
    assert plain.runs[0].model.vocab_size is None, "nothing claims a vocabulary the run will not have"
    trainer = Trainer(plain.runs[0], tmp_path / "plain")
    assert trainer.model.lm_head.weight.shape[0] == _tokens(plain)

    padded = _study(tmp_path, "base.model.vocab_size=128")
    assert _tokens(padded) < 128
    trainer = Trainer(padded.runs[0], tmp_path / "padded")
    assert trainer.model.lm_head.weight.shape[0] == trainer.model.token_embedding.weight.shape[0] == 128
    assert trainer.run().status.value == "finished"
    assert padded.runs[0].key() != plain.runs[0].key()


def test_a_vocabulary_smaller_than_the_tokenizers_is_refused_at_load(tmp_path):
    with pytest.raises(AblateError, match=r"model.vocab_size \(50\) is smaller than the tokenizer's \d+ tokens"):
        _study(tmp_path, "base.model.vocab_size=50")


def test_base_sections_are_typed_so_a_misspelt_field_is_named_where_it_was_written(tmp_path):
    with pytest.raises(AblateError, match=r"base.train.learning_rate: Extra inputs are not permitted"):
        _study(tmp_path, "base.train.learning_rate=0.01")
    with pytest.raises(AblateError, match=r"base.model.n_layer: Input should be greater than 0"):
        _study(tmp_path, "base.model.n_layer=0")
