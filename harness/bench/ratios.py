"""Ratios measured in one process: harness against bare loop, tracked against untracked,
pruned against unpruned.

`overhead`: the trainer's step time against a bare PyTorch loop doing the same work (same
model, batches, optimizer groups, schedule, clipping, compilation and autocast), timed
alternately so that both see the same machine state.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass

import torch

from harness.config.run import RunSpec
from harness.model.gpt import GPT
from harness.training.observer import Observer, Observers
from harness.training.optim import lr_at, make_optimizer
from harness.training.trainer import Trainer

OVERHEAD_MODEL = dict(n_layer=4, d_model=128, n_head=4, context_length=128)


@dataclass
class BenchResult:
    setting: str
    measured_ms: dict[str, float]  # label -> median milliseconds per step
    ratio_label: str
    ratio: float

    def text(self) -> str:
        times = "   ".join(f"{label}: {value:.1f}" + (" ms/step" if "steps" not in label else "")
                           for label, value in self.measured_ms.items())
        return f"{self.setting}\n{times}   {self.ratio_label}: {self.ratio:.3f}"


def _setting(steps: int, repeats: int, spec: RunSpec, what: str) -> str:
    shape = ", ".join(f"{k}={getattr(spec.model, k)}" for k in OVERHEAD_MODEL)
    device = spec.train.device + (", compiled" if spec.train.compile else "")
    return f"model {shape}, batch {spec.train.batch_size}, {what}, {spec.train.steps} steps x {repeats} alternating repeats, {device}"


class _StepClock(Observer):
    """Observer that timestamps the training-loss records: no extra work in the loop."""

    def __init__(self):
        self.stamps: dict[int, float] = {}

    def on_metrics(self, step, metrics):
        if "train_loss" in metrics:
            self.stamps.setdefault(step, time.perf_counter())


def _trainer_step_time(spec: RunSpec, run_dir, warmup: int, tracked=None) -> float:
    clock = _StepClock()
    Trainer(spec, run_dir, Observers(clock, tracked)).run(resume=False)
    return (clock.stamps[spec.train.steps] - clock.stamps[warmup]) / (spec.train.steps - warmup)


def _bare_step_time(spec: RunSpec, trainer: Trainer, warmup: int) -> float:
    """nanoGPT's loop: batch, forward, backward, clip, step."""
    torch.manual_seed(spec.seed)
    model = GPT(trainer.model.cfg).to(trainer.device)
    step_model = torch.compile(model) if spec.train.compile else model
    optimizer = make_optimizer(model, spec.train, trainer.device)
    generator = torch.Generator().manual_seed(spec.seed)
    cfg, context = spec.train, spec.model.context_length
    autocast = (torch.autocast(trainer.device.type, dtype=trainer.autocast_dtype) if trainer.autocast_dtype
                else contextlib.nullcontext())
    loss = torch.zeros((), device=trainer.device)
    for step in range(cfg.steps):
        if step == warmup:
            loss.item()  # the warm-up steps are done on the device too
            start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = trainer.dataset.train_batch(cfg.batch_size, context, generator)
        with autocast:
            _, loss = step_model(trainer.to_device(x), trainer.to_device(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()
    return (time.perf_counter() - start) / (cfg.steps - warmup)


def _bench_spec(steps: int, batch_size: int, log_interval: int, eval_interval: int, **overrides) -> RunSpec:
    """The CPU benchmark run; `overrides` (model, data, device, compile) move it elsewhere."""
    train = dict(steps=steps, batch_size=batch_size, log_interval=log_interval, eval_interval=eval_interval,
                 device=overrides.pop("device", "cpu"), compile=overrides.pop("compile", False))
    data = overrides.pop("data", {})
    return RunSpec(model=overrides.pop("model", OVERHEAD_MODEL), train=train,
                   data={"val_windows": batch_size, **data}, **overrides)


def overhead(run_dir, steps: int = 40, repeats: int = 3, batch_size: int = 8, **overrides) -> BenchResult:
    """Harness step time / bare loop step time; `overrides` as in `_bench_spec`."""
    warmup = 10
    spec = _bench_spec(steps, batch_size, warmup, 10 * steps, **overrides)
    reference = Trainer(spec, run_dir)
    harness_times, bare_times = [], []
    for _ in range(repeats):
        bare_times.append(_bare_step_time(spec, reference, warmup))
        harness_times.append(_trainer_step_time(spec, run_dir, warmup))
    harness, bare = statistics.median(harness_times), statistics.median(bare_times)
    return BenchResult(_setting(steps, repeats, spec, "same batches, optimizer and schedule"),
                       {"bare loop": 1000 * bare, "harness": 1000 * harness}, "harness/bare", harness / bare)


def tracking(run_dir, steps: int = 40, repeats: int = 3, batch_size: int = 8) -> BenchResult:
    """Step time with every metric going to MLflow (sqlite store, log_interval 1, an evaluation
    every 10 steps) against the same run tracked by nobody."""
    from harness.tracking.tracker import RUN_KIND, Tracker

    warmup = 10
    spec = _bench_spec(steps, batch_size, 1, 10)
    tracker = Tracker(f"sqlite:///{run_dir}/bench-mlflow.db")
    experiment = tracker.experiment_id("bench")
    parent = tracker.create_run(experiment, "bench")
    tracked_times, silent_times = [], []
    for _ in range(repeats):
        silent_times.append(_trainer_step_time(spec, run_dir, warmup))
        run = tracker.open_run(experiment, parent, spec, kind=RUN_KIND, name="bench", tags={})
        tracked_times.append(_trainer_step_time(spec, run_dir, warmup, run))
        run.flush(wait=True)
    tracked, silent = statistics.median(tracked_times), statistics.median(silent_times)
    return BenchResult(_setting(steps, repeats, spec, "every step logged to MLflow (sqlite), evaluation every 10"),
                       {"untracked": 1000 * silent, "tracked": 1000 * tracked}, "tracked/untracked", tracked / silent)


def pruning(run_dir, steps: int = 120, repeats: int = 1, trials: int = 12) -> BenchResult:
    """Training steps of a learning-rate search with the median pruner against the same
    search without pruning. Both try the same learning rates in the same (shuffled) order,
    so the best validation loss is the same unless the pruner stops the best trial."""
    import numpy as np
    import optuna

    from harness.study.lifecycle import RunPruned
    from harness.study.tuning import ReportToPruner

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = RunSpec(model=dict(n_layer=2, d_model=32, n_head=2, context_length=32),
                   train=dict(steps=steps, batch_size=8, log_interval=10, eval_interval=10, device="cpu",
                              compile=False), data=dict(val_windows=16))
    rates = np.random.default_rng(0).permutation(np.geomspace(1e-4, 1e-1, trials)).tolist()

    def search(pruner):
        clock, spent = _StepClock(), [0]
        study = optuna.create_study(pruner=pruner)
        for lr in rates:
            study.enqueue_trial({"lr": lr})

        def objective(trial):
            lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            run = spec.model_copy(update={"train": spec.train.model_copy(update={"lr": lr})})
            clock.stamps.clear()
            try:
                return Trainer(run, run_dir, Observers(clock, ReportToPruner(trial, "val_loss"))).run(resume=False).metrics["val_loss"]
            except RunPruned as pruned:
                raise optuna.TrialPruned(str(pruned)) from None
            finally:
                spent[0] += max(clock.stamps, default=0)

        study.optimize(objective, n_trials=trials)
        return spent[0], study.best_value

    plain_steps, plain_best = search(optuna.pruners.NopPruner())
    pruned_steps, pruned_best = search(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=steps // 3))
    setting = (f"{trials} learning rates (1e-4 to 1e-1, same shuffled order) for a 2x32 model, {steps} steps each; "
               f"best val_loss without pruning {plain_best:.4f}, with the median pruner {pruned_best:.4f}")
    return BenchResult(setting, {"no pruning steps": plain_steps, "median pruner steps": pruned_steps},
                       "share of steps saved", 1 - pruned_steps / plain_steps)
