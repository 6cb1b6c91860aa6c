"""Running a study: check, plan into the ledger, let workers train, track, report.

Runs are queued seed-major (every arm's seed 0, then every arm's seed 1, ...), so a study
stopped half-way already compares all arms. A run whose key already finished in MLflow is
not trained again; one that was interrupted continues from its checkpoint in the same
MLflow run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from harness.data import load_dataset
from harness.errors import AblateError
from harness.ledger import Ledger, WorkerOutcome
from harness.model import GPT
from harness.outbox import OUTBOX_NAME
from harness.progress import Observers, RunProgress, make_progress
from harness.sampling import training_sample
from harness.spec import RunSpec
from harness.study import StudySpec
from harness.tracking import DONE_STATES, Tracker
from harness.training.faults import RunFailed
from harness.training.optim import make_optimizer
from harness.training.trainer import Trainer, resolve_device


def check_data(specs: list[RunSpec]) -> dict:
    """Load each distinct dataset once, before any training: missing files fail here.
    Returns the datasets by their configuration (as JSON)."""
    datasets = {}
    for spec in specs:
        key = spec.data.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(spec.data)
        try:
            datasets[key].check_context(spec.model.context_length)
        except ValueError as err:
            raise AblateError(f"arm '{spec.arm}': data: {err}") from None
    return datasets


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


class RunTrainer:
    """Trains single runs of a study into its MLflow experiment, under one parent run.

    A run already finished in MLflow is not trained again; an interrupted one continues in
    its MLflow run from its checkpoint.
    """

    def __init__(self, study: StudySpec, datasets: dict, tracker: Tracker, runs_dir: Path, parent_run_id: str,
                 progress):
        self.study = study
        self.datasets = datasets
        self.tracker = tracker
        self.runs_dir = runs_dir
        self.parent_run_id = parent_run_id
        self.progress = progress
        self.experiment_id = tracker.experiment_id(study.name)

    def train(self, spec: RunSpec) -> tuple[str, float | None]:
        """The run's final state ('done' when MLflow had it already) and its report metric.

        A run that cannot go on (out of memory, an unusable checkpoint) ends 'failed', its
        reason tagged, and the study goes on; anything else stops the study, the run marked
        interrupted so that the next `ablate run` resumes it.
        """
        metric = self.study.report.metric
        # what earlier runs kept while the store was away goes first
        self.tracker.patiently(lambda: self.tracker.send_kept(self.runs_dir / self.study.name), "sending kept records")
        prior = self.tracker.patiently(
            lambda: self.tracker.runs_by_key(self.experiment_id, spec.key()).get(spec.key()), "looking up a run")
        if prior is not None and prior.data.tags.get("state") in DONE_STATES:
            return "done", prior.data.metrics.get(metric)
        run_dir = self.runs_dir / self.study.name / spec.key()
        tracked = self.tracker.patiently(lambda: self.tracker.open_run(
            self.experiment_id, self.parent_run_id, spec, existing=prior, outbox_path=run_dir / OUTBOX_NAME),
            "starting a run")
        bar = RunProgress(self.progress, f"{spec.arm} seed {spec.seed}", spec.train.steps)
        try:
            trainer = Trainer(spec, run_dir, Observers(tracked, bar))
            result = trainer.run()
        except RunFailed as fault:
            tracked.end("failed", "FAILED", str(fault))
            bar.close()
            self.progress.console.print(f"[yellow]failed:[/] {spec.arm} seed {spec.seed}: {fault}")
            return "failed", None
        except BaseException:
            tracked.interrupted()
            raise
        tracked.finish(result, trainer.model.summary(), training_sample(trainer))
        bar.close()
        return result.status, result.metrics.get(metric)


def work(study: StudySpec, specs: list[RunSpec], datasets: dict, tracker: Tracker, ledger: Ledger, runs_dir: Path,
         console: Console) -> WorkerOutcome:
    """Be one worker of the study: claim queued runs from the ledger and train them."""
    by_key = {spec.key(): spec for spec in specs}

    with make_progress(console) as progress:
        runner = RunTrainer(study, datasets, tracker, runs_dir, ledger.parent_run_id(), progress)
        claimed = progress.add_task(f"study {study.name}: runs claimed by this worker", total=None, status="")

        def train_key(key: str):
            if key not in by_key:
                raise AblateError(f"the ledger holds run {key}, which this study file does not plan; start workers "
                                  "with the same study file, --set and --profile as `ablate run`")
            state, value = runner.train(by_key[key])
            progress.update(claimed, advance=1, status=f"last: {by_key[key].arm} seed {by_key[key].seed} {state}")
            return state, value

        return ledger.work(train_key)
