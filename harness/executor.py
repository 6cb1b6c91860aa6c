"""Running a study: plan, skip what is done, train the rest, track, report.

Runs are taken seed-major (every arm's seed 0, then every arm's seed 1, ...), so a study
stopped half-way already compares all arms. A run whose key already finished in MLflow is
skipped; one that was interrupted continues from its checkpoint in the same MLflow run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from harness.data import load_dataset
from harness.errors import AblateError
from harness.model import GPT
from harness.progress import Observers, RunProgress, make_progress
from harness.sampling import sample_text
from harness.spec import RunSpec
from harness.study import StudySpec, expand
from harness.tracking import DONE_STATES, Tracker
from harness.training.optim import make_optimizer
from harness.training.trainer import Trainer, resolve_device


@dataclass
class StudyOutcome:
    trained: int = 0
    skipped: int = 0
    diverged: list[str] = field(default_factory=list)
    parent_run_id: str = ""


def check_data(specs: list[RunSpec]) -> dict:
    """Load each distinct dataset once, before any training: missing files fail here."""
    vocab = {}
    for spec in specs:
        key = spec.data.model_dump_json()
        if key not in vocab:
            dataset = load_dataset(spec.data)
            vocab[key] = dataset
        try:
            vocab[key].check_context(spec.model.context_length)
        except ValueError as err:
            raise AblateError(f"arm '{spec.arm}': data: {err}") from None
    return vocab


def measure_step_seconds(spec: RunSpec, vocab_size: int, steps: int = 2) -> float:
    """Time a few optimizer steps of this arm's model on random tokens (after one warm-up)."""
    device = resolve_device(spec.train.device)
    torch.manual_seed(0)
    model = GPT(spec.model.model_copy(update={"vocab_size": vocab_size})).to(device)
    optimizer = make_optimizer(model, spec.train, device)
    x = torch.randint(vocab_size, (spec.train.batch_size, spec.model.context_length), device=device)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        for _ in range(spec.train.grad_accum):
            model(x, x)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def print_plan(study: StudySpec, specs: list[RunSpec], datasets: dict, console: Console) -> None:
    table = Table(title=f"plan of study '{study.name}': {len(study.arm_list())} arms x {len(study.seeds)} seeds")
    for column in ("arm", "seeds", "params (non-emb.)", "FLOPs/token", "tokens/run", "est. time/run"):
        table.add_column(column, justify="right" if column != "arm" else "left")
    total = 0.0
    first_seed = [s for s in specs if s.seed == study.seeds[0]]
    for spec in first_seed:
        vocab = datasets[spec.data.model_dump_json()].vocab_size
        with torch.device("meta"):
            model = GPT(spec.model.model_copy(update={"vocab_size": vocab}))
        seconds = measure_step_seconds(spec, vocab) * spec.train.steps
        total += seconds * len(study.seeds)
        tokens = spec.train.steps * spec.train.batch_size * spec.train.grad_accum * spec.model.context_length
        table.add_row(spec.arm, str(len(study.seeds)), f"{model.num_parameters(non_embedding=True):,}",
                      f"{model.flops_per_token():,}", f"{tokens:,}", f"{seconds:,.0f} s")
    console.print(table)
    console.print(f"{len(specs)} runs, estimated {total / 60:.1f} min of training on {resolve_device(specs[0].train.device)}")


def run_study(study: StudySpec, tracker: Tracker, runs_dir: Path, where: str, console: Console) -> StudyOutcome:
    specs = expand(study, where)
    datasets = check_data(specs)
    experiment_id = tracker.experiment_id(study.name)
    existing = tracker.runs_by_key(experiment_id)
    outcome = StudyOutcome(parent_run_id=tracker.start_study(experiment_id, study, len(specs), where))
    with make_progress(console) as progress:
        overall = progress.add_task(f"study {study.name}", total=len(specs), status="")
        for spec in specs:
            prior = existing.get(spec.key())
            if prior is not None and prior.data.tags.get("state") in DONE_STATES:
                outcome.skipped += 1
                progress.update(overall, advance=1, status=f"{outcome.skipped} already done")
                continue
            tracked = tracker.open_run(experiment_id, outcome.parent_run_id, spec, existing=prior)
            bar = RunProgress(progress, f"{spec.arm} seed {spec.seed}", spec.train.steps)
            try:
                trainer = Trainer(spec, runs_dir / study.name / spec.key(), Observers(tracked, bar))
                result = trainer.run()
            except BaseException:
                tracked.interrupted()
                tracker.end_study(outcome.parent_run_id, "KILLED")
                raise
            tracked.finish(result, trainer.model.summary(), _sample(trainer, datasets[spec.data.model_dump_json()]))
            bar.close()
            outcome.trained += 1
            if result.status != "finished":
                outcome.diverged.append(f"{spec.arm} seed {spec.seed}: {result.reason}")
            progress.update(overall, advance=1, status=f"{outcome.trained} trained, {outcome.skipped} already done")
    tracker.end_study(outcome.parent_run_id)
    return outcome


def _sample(trainer: Trainer, dataset) -> str:
    if getattr(dataset, "exact_match", False):
        return ""
    trainer.model.eval()
    return sample_text(trainer.model, trainer.dataset.tokenizer, "\n", 300, temperature=0.8, top_k=50, seed=0)
