"""What a run is judged on, computed on its dataset's validation batches (the same rows for every
arm and seed):

- ``val_loss``: the mean cross-entropy of the target tokens, in nats per token of the run's
  own tokenizer (the model's loss, as nanoGPT reports it).
- ``val_bpb``: the same targets' cross-entropy in bits per UTF-8 byte of the text they stand
  for, for datasets whose tokens decode to text: the sum of the targets' nats over the sum of
  their bytes, / ln 2 (nanochat's ``evaluate_bpb``; tokens that stand for no text, such as
  special tokens, count neither nats nor bytes). It does not depend on how the text was cut
  into tokens, so it compares arms whose tokenizers differ, where ``val_loss`` cannot.
- ``val_exact_match``: for tasks (``exact_match`` datasets), the share of validation rows
  whose every supervised token is predicted (greedy) exactly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from harness.training.build import RunParts

# metrics of the model's own tokens: they compare arms only where every arm has one tokenizer
PER_TOKEN_METRICS = ("val_loss", "train_loss")


def decodes_text(dataset) -> bool:
    """Whether the dataset's tokens are text its tokenizer decodes (text corpora, token files
    with their declared tokenizer), so that bits per byte mean something; a plugin dataset says
    so with a `decodes_text` attribute."""
    return bool(getattr(dataset, "decodes_text", False))


def metric_names(dataset) -> list[str]:
    """The metrics a run on `dataset` logs, any of which a study may take as its `report.metric`."""
    names = ["val_loss", "train_loss"]
    if decodes_text(dataset):
        names.append("val_bpb")
    if dataset.exact_match:
        names.append("val_exact_match")
    return names


class Evaluation:
    """The validation metrics of one run's model, on `batches` of (inputs, targets), each (B, T)
    int64 with -1 for targets that carry no loss."""

    def __init__(self, dataset, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device):
        self.dataset, self.batches = dataset, batches
        # bytes of text per token id: (vocab_size,) on the device, gathered by target
        self.token_bytes = (torch.from_numpy(dataset.tokenizer.token_bytes()).to(device)
                            if decodes_text(dataset) else None)

    @torch.no_grad()
    def __call__(self, parts: RunParts) -> dict[str, float]:
        """The metrics of the run's model as it trains (its step model, under its autocast), in
        eval mode; it is left in train mode."""
        parts.model.eval()
        total_loss, total_rows, exact = 0.0, 0, 0
        nats = torch.zeros((), dtype=torch.float64)
        text_bytes = torch.zeros((), dtype=torch.int64)
        for x, y in self.batches:
            x, y = parts.to_device(x), parts.to_device(y)
            with parts.autocast():
                logits, loss = parts.step_model(x, y)
            total_loss += loss.item() * x.size(0)
            total_rows += x.size(0)
            if self.token_bytes is not None:
                per_token = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1,
                                            reduction="none")
                weights = self.token_bytes[y.flatten().clamp(min=0)] * (y.flatten() != -1)
                nats += per_token[weights > 0].double().sum().cpu()
                text_bytes += weights.sum().cpu()
            if self.dataset.exact_match:
                supervised = y != -1
                correct = (logits.argmax(-1) == y) | ~supervised
                exact += int(correct.all(dim=1).sum())
        parts.model.train()
        metrics = {"val_loss": total_loss / total_rows}
        if self.token_bytes is not None and int(text_bytes) > 0:
            metrics["val_bpb"] = float(nats) / int(text_bytes) / math.log(2)
        if self.dataset.exact_match:
            metrics["val_exact_match"] = exact / total_rows
        return metrics
