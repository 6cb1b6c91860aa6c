"""Every example a message gives is itself valid: taken out of the message and used as the
message says, the study loads."""

import re

import pytest

from harness import Study
from harness.config.data import TokenizerConfig
from harness.errors import AblateError

STUDY = """
name: teach
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 4, batch_size: 2}
data: {dataset: addition, digits: 2}
arms:
  - name: a
  - name: b
    set: {model.norm: rmsnorm}
"""


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(STUDY)
    return tmp_path / "study.yaml"


def _message(study_file, overrides) -> str:
    with pytest.raises(AblateError) as refused:
        Study.load(study_file, overrides)
    return str(refused.value)


def test_the_example_of_a_setting_without_a_value_is_a_valid_setting(study_file):
    message = _message(study_file, ["base.train.lr"])
    [example] = re.findall(r"e\.g\. (\S+=\S+)", message)
    assert Study.load(study_file, [example]).runs


@pytest.mark.parametrize("typo", ["base.train.learning_rate=1e-3", "base.model.n_embd=32", "base.train.stepz=5",
                                  "report.baselin=a", "data.digitz=3", "base.model.mlp={name: gelu, hidden_ration: 3}",
                                  "base.train.lora.rnak=4", "base.train.init_from.studdy=x"])
def test_the_name_a_typo_is_told_to_use_is_a_valid_name(study_file, typo):
    message = _message(study_file, [typo])
    [suggested] = re.findall(r"did you mean '([^']+)'", message)
    path, value = typo.split("=", 1)
    fixed = f"{path.rsplit('.', 1)[0]}.{suggested}={value}"
    if "init_from" in path:  # a study run needs its other fields to load, not to be recognised
        fixed = "base.train.init_from={study: x}"
        assert suggested == "study"
        with pytest.raises(AblateError, match="starts from study 'x', which has no plan"):
            Study.load(study_file, [fixed])
        return
    if "mlp" in path:
        fixed = typo.replace("hidden_ration", suggested)
    assert Study.load(study_file, [fixed]).runs


def test_the_seeds_an_a_a_control_is_told_to_give_make_it_load(study_file):
    study_file.write_text(STUDY.replace("set: {model.norm: rmsnorm}", "set: {model.norm: layernorm}"))
    message = _message(study_file, [])
    [example] = re.findall(r"`(seeds: \[[^\]]+\])` in arm 'b'", message)
    study_file.write_text(STUDY.replace("set: {model.norm: rmsnorm}", f"set: {{model.norm: layernorm}}\n    {example}"))
    assert {spec.seed for spec in Study.load(study_file).runs if spec.arm == "b"} == {100, 101, 102}


def test_the_tokenizer_example_is_a_tokenizer():
    with pytest.raises(ValueError) as refused:
        TokenizerConfig.model_validate("tiktoken:")
    [example] = re.findall(r"e\.g\. (\S+)", str(refused.value))
    assert TokenizerConfig.model_validate(example).encoding == "gpt2"
