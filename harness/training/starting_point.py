"""Where a run's weights start: random initialisation, an ablate checkpoint, or a Hugging Face model.

    train.init_from: runs/pretrain/3f2a9c0b1d2e4f56/checkpoint.pt    # an ablate checkpoint
    train.init_from: hf:gpt2                                        # a model id, or a save_pretrained folder

(Another study's run, `{study, arm, seed}`, is turned into its checkpoint's path by the study
before a run sees it: harness.study.staging.)

A starting point brings the tokenizer its weights were trained with, an identity that goes
into the run key (the checkpoint's content, or the model's revision: a run that starts from
other weights is another run), and what the run records about it. A Hugging Face model also
brings its architecture: the study's model settings keep only their context length and
execution choices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from harness.config.model import ModelConfig
from harness.config.train import StudyRun
from harness.data import Tokenizer
from harness.errors import AblateError
from harness.model.gpt import GPT
from harness.training.checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_of

# what a study still decides about a model whose architecture comes from Hugging Face
KEPT_FROM_STUDY = ("context_length", "attention_backend", "kernels", "gradient_checkpointing", "dropout")


@dataclass
class StartingPoint:
    init_from: str
    tokenizer: Tokenizer | None  # None: the data's own
    identity: str  # part of the run key
    record: dict[str, str]  # params of the run
    architecture: ModelConfig | None = None  # set when the weights fix the architecture
    load: Callable[[GPT], None] = field(default=lambda model: None, repr=False)

    def model_for(self, cfg: ModelConfig) -> ModelConfig:
        """The model a run of configuration `cfg` trains from here."""
        if self.architecture is None:
            return cfg
        # a setting the weights fix, written otherwise in the study, would be dropped without a word
        # (two arms that differ only there would train the same model)
        for name in sorted(cfg.model_fields_set - set(KEPT_FROM_STUDY)):
            if getattr(cfg, name) != getattr(self.architecture, name):
                raise AblateError(f"model.{name} = {_shown(getattr(cfg, name))} differs from the "
                                  f"{_shown(getattr(self.architecture, name))} of {self.init_from}, whose weights fix "
                                  f"the architecture: a study starting there sets only model.{', model.'.join(KEPT_FROM_STUDY)}")
        table = self.architecture.position.name == "learned"
        if table and cfg.context_length > self.architecture.context_length:
            raise AblateError(f"model.context_length {cfg.context_length} is longer than the "
                              f"{self.architecture.context_length} positions of {self.init_from}")
        return self.architecture.model_copy(update={name: getattr(cfg, name) for name in KEPT_FROM_STUDY})


def _shown(value) -> str:
    return value.name if hasattr(value, "name") and hasattr(value, "options") else str(value)


def starting_point(init_from: str | StudyRun) -> StartingPoint:
    if isinstance(init_from, StudyRun):
        raise AblateError(f"train.init_from names study '{init_from.study}': a run of another study is found by "
                          "`ablate run` (or Study.load), which turns it into that run's checkpoint")
    from harness.model.hf_source import PREFIX

    if init_from.startswith(PREFIX):
        return _from_hf(init_from)
    return _from_checkpoint(init_from)


def _from_checkpoint(path: str) -> StartingPoint:
    state = load_checkpoint(path)
    with open(path, "rb") as file:
        content = hashlib.file_digest(file, "sha256").hexdigest()[:16]

    def load(model: GPT) -> None:
        try:
            model.load_state_dict(state["model"])
        except KeyError:
            raise AblateError(f"train.init_from {path}: the checkpoint holds no weights") from None
        except RuntimeError as err:
            first = " ".join(str(err).strip().splitlines()[:3])
            raise AblateError(f"train.init_from {path}: its weights do not fit this model: {first}") from None

    return StartingPoint(path, tokenizer_of(path, state), f"checkpoint sha256:{content}",
                         {"init_from_checkpoint_sha256": content}, load=load)


def _from_hf(init_from: str) -> StartingPoint:
    from harness.model.hf_interop import config_from_hf, load_hf_weights
    from harness.model.hf_source import PREFIX, find_hf

    source = find_hf(init_from.removeprefix(PREFIX))
    architecture = config_from_hf(source.config)

    def load(model: GPT) -> None:
        load_hf_weights(model, source.model())

    return StartingPoint(init_from, source.tokenizer(), f"{source.name}@{source.revision}",
                         {"init_from_model": source.name, "init_from_revision": source.revision},
                         architecture=architecture, load=load)


def trained_model(source: str, device: torch.device) -> tuple[GPT, Tokenizer]:
    """The model (in eval mode, on `device`) and tokenizer that a checkpoint, a run folder or
    `hf:<model id or folder>` (a Hugging Face GPT-2 or Llama) holds."""
    from harness.model.hf_source import PREFIX, model_from_hf

    if source.startswith(PREFIX):
        model, tokenizer = model_from_hf(source.removeprefix(PREFIX))
        return model.to(device), tokenizer
    return model_from_checkpoint(source, device)
