"""A Hugging Face model as a run's starting point: `train.init_from: hf:<model id or folder>`.

A folder saved with `save_pretrained` is used as it is; a model id is looked up in the local
Hugging Face cache first, then downloaded (unless HF_HUB_OFFLINE is set). The source is
identified by its hub revision (the commit of the cached snapshot) or, for a folder, by the
hash of its files, so the run key changes whenever the weights do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness.data.tokenizers import Tokenizer, hf_tokenizer, tiktoken_tokenizer
from harness.errors import AblateError
from harness.redaction import error_line

PREFIX = "hf:"
# what a model needs: configuration, weights and tokenizer (not a repository's other formats)
FILES = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]
GPT2_VOCABULARY = 50257


def _needs_transformers(err: ModuleNotFoundError) -> AblateError:
    return AblateError(f"init_from hf: needs the Python package '{err.name}': pip install 'ablate[hf]'")


@dataclass(frozen=True)
class HFSource:
    name: str  # what follows `hf:`
    folder: Path  # where its files are
    revision: str  # the hub commit of the snapshot, or "sha256:..." of a local folder's files

    @cached_property
    def config(self):
        try:
            from transformers import AutoConfig
        except ModuleNotFoundError as err:
            raise _needs_transformers(err) from None
        try:
            return AutoConfig.from_pretrained(self.folder)
        except (OSError, ValueError, KeyError) as err:
            raise AblateError(f"init_from hf:{self.name}: its configuration cannot be read ({error_line(err, 200)})") from None

    def tokenizer(self) -> Tokenizer | None:
        """The model's own tokenizer, GPT-2's encoding for a GPT-2 vocabulary without one, or None
        (the study's tokenizer is used, and must fit the model's vocabulary)."""
        if (self.folder / "tokenizer.json").is_file():
            return hf_tokenizer((self.folder / "tokenizer.json").read_text(encoding="utf-8"))
        if self.config.model_type == "gpt2" and self.config.vocab_size == GPT2_VOCABULARY:
            return tiktoken_tokenizer("gpt2")
        return None

    def model(self):
        """The `transformers` model, in float32 on the CPU."""
        import torch
        from transformers import AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise AblateError(f"init_from hf:{self.name}: its weights cannot be loaded ({error_line(err, 200)})") from None


def model_from_hf(name: str):
    """An ablate GPT (in eval mode) with a Hugging Face model's weights, and its tokenizer."""
    from harness.model.hf_interop import config_from_hf, from_hf

    source = find_hf(name)
    config = config_from_hf(source.config)  # a configuration ablate cannot compute is said before anything else
    tokenizer = source.tokenizer()
    if tokenizer is None:
        raise AblateError(f"hf:{name} comes with no tokenizer (no tokenizer.json) to turn samples into text")
    if tokenizer.vocab_size > config.vocab_size:
        raise AblateError(f"hf:{name}: its tokenizer has {tokenizer.vocab_size} tokens for a model of "
                          f"{config.vocab_size} (vocab_size): the tokenizer.json is not this model's")
    return from_hf(source.model()), tokenizer


def find_hf(name: str) -> HFSource:
    """The model `name` names: a folder, or a model id in (or downloaded into) the Hugging Face cache."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return HFSource(name, folder, "sha256:" + _folder_hash(folder))
    try:
        from huggingface_hub import constants, snapshot_download
    except ModuleNotFoundError as err:
        raise _needs_transformers(err) from None
    try:
        found = snapshot_download(name, local_files_only=True, allow_patterns=FILES)
    except Exception:  # not cached, or not a valid id
        if constants.HF_HUB_OFFLINE:
            raise AblateError(f"init_from hf:{name}: no such folder, and model '{name}' is not in the Hugging Face "
                              f"cache {constants.HF_HUB_CACHE} (offline: HF_HUB_OFFLINE is set). Download it where "
                              f"there is network (`hf download {name}`), or set HF_HOME to a cache that holds it") from None
        try:
            found = snapshot_download(name, allow_patterns=FILES)
        except Exception as err:
            raise AblateError(f"init_from hf:{name}: no such folder, model '{name}' is not in the Hugging Face cache "
                              f"{constants.HF_HUB_CACHE}, and downloading it failed ({error_line(err, 200)}). "
                              f"Download it where there is network (`hf download {name}`), or set HF_HOME to a "
                              "cache that holds it") from None
    return HFSource(name, Path(found), Path(found).name)


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for pattern in FILES for p in folder.glob(pattern)):
        digest.update(path.name.encode())
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:16]
