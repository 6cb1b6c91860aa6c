"""Checkpoints: weights, optimizer, RNG states and the curve so far, loaded safely.

Everything is stored as tensors and plain containers so that loading works with
``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import torch

from harness.data import Tokenizer
from harness.errors import file_fault
from harness.model.config import ModelConfig
from harness.model.gpt import GPT
from harness.redaction import error_line
from harness.training.faults import RunFailed

FORMAT = 2


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:  # a file of ours: a full disk is an OSError, not torch's RuntimeError
            torch.save({"format": FORMAT, **payload}, file)
        tmp.replace(path)
    except OSError as err:
        fault = file_fault(err, tmp)
        if fault is None:
            raise
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise fault from None


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunFailed(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
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
    """The trained model (in eval mode) and its tokenizer, rebuilt from a checkpoint."""
    state = load_checkpoint(path)
    model = GPT(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Tokenizer.from_state(state["tokenizer"])
