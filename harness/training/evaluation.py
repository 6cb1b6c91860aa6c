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
- downstream tasks (the run's `eval:`, scored by lm-evaluation-harness through
  harness.downstream): ``task/metric`` and ``task/metric_stderr``, every `eval.every` steps
  and at the end, on the main process of a data-parallel run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F

from harness.config.eval import EvalConfig

if TYPE_CHECKING:
    from harness.training.build import RunParts


def decodes_text(dataset) -> bool:
    """Whether the dataset's tokens are text its tokenizer decodes (text corpora, token files
    with their declared tokenizer), so that bits per byte mean something; a plugin dataset says
    so with a `decodes_text` attribute."""
    return bool(getattr(dataset, "decodes_text", False))


def metric_names(dataset, task_metrics: Iterable[str] = ()) -> list[str]:
    """The metrics a run on `dataset` logs (with `task_metrics`, those of its downstream tasks),
    any of which a study may take as its `report.metric`."""
    names = ["val_loss", "train_loss"]
    if decodes_text(dataset):
        names.append("val_bpb")
    if dataset.exact_match:
        names.append("val_exact_match")
    return names + list(task_metrics)


class Evaluation:
    """The validation metrics of one run's model, on `batches` of (inputs, targets), each (B, T)
    int64 with -1 for targets that carry no loss."""

    def __init__(self, dataset, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                 tasks: EvalConfig | None = None):
        self.dataset, self.batches, self.tasks = dataset, batches, tasks
        # bytes of text per token id: (vocab_size,) on the device, gathered by target
        self.token_bytes = (torch.from_numpy(dataset.tokenizer.token_bytes()).to(device)
                            if decodes_text(dataset) else None)

    def tasks_due(self, step: int, last: bool) -> bool:
        """Whether the downstream tasks are scored at `step` (every `eval.every` steps and at the end)."""
        return self.tasks is not None and (last or bool(self.tasks.every) and step % self.tasks.every == 0)

    @torch.no_grad()
    def __call__(self, parts: RunParts, with_tasks: bool = False) -> dict[str, float]:
        """The metrics of the run's model as it trains (its step model, under its autocast), in
        eval mode, with the downstream tasks' when `with_tasks`; it is left in train mode."""
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
        if with_tasks and self.tasks is not None and parts.parallel.is_main:
            metrics.update(self._downstream(parts))
        return metrics

    def _downstream(self, parts: RunParts) -> dict[str, float]:
        from harness.downstream.lm import AblateLM
        from harness.downstream.tasks import run_tasks

        parts.model.eval()
        try:
            lm = AblateLM(parts.model, self.dataset.tokenizer, self.tasks.batch_size, parts.autocast)
            return run_tasks(lm, self.tasks)
        finally:
            parts.model.train()

