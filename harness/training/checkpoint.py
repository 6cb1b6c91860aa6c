"""Checkpoints: weights, optimizer, RNG states and the curve so far, loaded safely.

Everything is stored as tensors and plain containers so that loading works with
``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config.model import ModelConfig
from harness.data import Tokenizer
from harness.files import write_atomically
from harness.model.gpt import GPT
from harness.redaction import error_line
from harness.training.faults import RunFailed

FORMAT = 2
CHECKPOINT_NAME = "checkpoint.pt"  # in each run's folder


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash or a full disk while saving leaves the previous checkpoint
    intact and no partial file (harness.files)."""
    write_atomically(path, lambda private: _save(private, {"format": FORMAT, **payload}))


def _save(path: Path, payload: dict) -> None:
    # a file of ours, closed here whatever happens: torch's writer, kept alive by the traceback of a
    # full disk, would hold the partial file open and its space taken after it is removed
    with open(path, "wb") as file:
        torch.save(payload, file)


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself, or the one checkpoint in the run folder `path`; RunFailed for a folder with
    none or several."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(path.glob(f"**/{CHECKPOINT_NAME}"))
    if len(found) != 1:
        some = ", ".join(str(f) for f in found[:3]) + (", ..." if len(found) > 3 else "")
        raise RunFailed(f"{path} is a folder with {len(found)} checkpoints ({some or 'none'}); give one run's "
                        f"folder or its {CHECKPOINT_NAME}")
    return found[0]


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents: `path` is the file, or a run's folder holding it."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise RunFailed(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler meets damaged bytes with any error (IndexError, KeyError, ...)
        # torch's own message advises loading with weights_only=False: never, for a file that may run code
        refused = "weights_only" in str(err) or "Weights only load failed" in str(err)
        reason = "it holds objects a safe load refuses" if refused else f"{type(err).__name__}: {error_line(err, 200)}"
        raise RunFailed(f"checkpoint {path} cannot be read: it is damaged or not an ablate checkpoint ({reason}). "
                        "Delete it to start its run again from the beginning") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunFailed(f"{path} is not an ablate checkpoint of format {FORMAT} (an older ablate may have written "
                        "it); delete it to start its run again")
    return payload


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[GPT, Tokenizer]:
    """The trained model (in eval mode) and its tokenizer, rebuilt from a checkpoint (or the run
    folder holding it)."""
    path = checkpoint_file(path)
    state = load_checkpoint(path)
    model = part_of(path, "model configuration", lambda: GPT(ModelConfig(**state["model_config"])))
    part_of(path, "weights", lambda: model.load_state_dict(state["model"]))
    tokenizer = tokenizer_of(path, state)
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise RunFailed(f"checkpoint {path} has a tokenizer of {tokenizer.vocab_size} tokens for a model of "
                        f"{model.cfg.vocab_size}; it was altered, or its parts come from different runs")
    return model.to(device).eval(), tokenizer


def tokenizer_of(path: str | Path, state: dict) -> Tokenizer:
    return part_of(path, "tokenizer", lambda: Tokenizer.from_state(state["tokenizer"]))


def part_of(path: str | Path, what: str, build):
    """build() from a loaded checkpoint, or one message saying which part of the file is unusable
    (a file that loads safely may still lack keys or hold nonsense)."""
    try:
        return build()
    except Exception as err:
        reason = f"no {err.args[0]!r}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
        raise RunFailed(f"checkpoint {path} has no usable {what} ({reason}); it was not written by this version "
                        "of ablate, or it was altered") from None
