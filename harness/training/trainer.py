"""The training loop of one run.

nanoGPT's loop with what an ablation needs on top: evaluation on fixed validation
batches, checkpoints that resume the same curve, divergence detection that keeps the logs,
and throughput/MFU. The loop touches the host only at log intervals (`.item()` on the
averaged loss), so metrics never stall the GPU.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.data.windows import TokenWindows
from harness.training.build import RunInputs, build_run
from harness.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from harness.training.faults import out_of_memory_fails_the_run
from harness.training.interrupt import deferred_interrupt, honour
from harness.training.lora import merge_lora
from harness.training.observer import Observer
from harness.training.optim import lr_at
from harness.training.slowdown import SlowdownWatch
from harness.training.throughput import mfu


@dataclass
class LoopState:
    """What the loop carries between steps besides model, optimizer and RNGs; checkpointed."""

    interval_loss_sum: float = 0.0  # training loss summed since the last log record
    interval_steps: int = 0  # steps in that sum
    start_loss: float | None = None  # the first step's loss, which divergence is judged against
    wall_time_s: float = 0.0  # training time of earlier attempts at this run


@dataclass
class TrainResult:
    status: RunState  # FINISHED or DIVERGED
    reason: str
    steps: int
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


class Trainer:
    def __init__(self, spec: RunSpec, run_dir: Path, observer: Observer | None = None,
                 inputs: RunInputs | None = None):
        """Build the run (harness.training.build) to train `spec` in `run_dir`; `inputs` shares
        data and starting weights with the study's other runs."""
        self.spec = spec
        self.cfg = spec.train
        self.run_dir = Path(run_dir)
        self.parts = build_run(spec, inputs)
        self.parallel, self.device, self.start = self.parts.parallel, self.parts.device, self.parts.start
        self.dataset, self.model, self.adapters = self.parts.dataset, self.parts.model, self.parts.adapters
        self.trainable, self.optimizer = self.parts.trainable, self.parts.optimizer
        self.eval_batches = self.parts.evaluation.batches
        self.autocast_dtype, self.compiled, self.step_model = (self.parts.autocast_dtype, self.parts.compiled,
                                                               self.parts.step_model)
        # only rank 0 reports and saves; the others train their share in lockstep
        self.observer = (observer if self.parallel.is_main else None) or Observer()
        self.data_rng = torch.Generator().manual_seed(spec.seed)
        self.flops_per_token = self.model.flops_per_token()
        self.slowdown = SlowdownWatch()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts.to_device(x)

    # ---- state ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def info(self) -> dict:
        data = {f"data_{k}": v for k, v in self.dataset.metadata.items()}
        references = self.dataset.reference_losses() if isinstance(self.dataset, TokenWindows) else {}
        trained = self.cfg.steps * self.tokens_per_step
        repetition = {"tokens_per_param": trained / self.model.num_parameters(non_embedding=True)}
        if self.dataset.metadata.get("train_tokens"):  # how many times the run sees its training split
            repetition["data_epochs"] = trained / self.dataset.metadata["train_tokens"]
        return {
            "execution": self.execution(),
            "vocab_size": self.dataset.vocab_size,
            "params": self.model.num_parameters(), "params_non_embedding": self.model.num_parameters(non_embedding=True),
            "params_trainable": self.trainable,
            "flops_per_token": self.flops_per_token, "tokens_per_step": self.tokens_per_step,
            **repetition, **references, **data, **(self.start.record if self.start else {}),
        }

    def execution(self) -> dict:
        """What this attempt at the run actually ran on and with (auto settings resolved, the
        dtype the weights hold and the one autocast computes in), which may differ between
        attempts of one run: recorded per attempt, never as a param."""
        return {
            "device": str(self.device), "processes": self.parallel.world, "threads": torch.get_num_threads(),
            "param_dtype": ",".join(sorted({_dtype_name(p.dtype) for p in self.model.parameters()})),
            "autocast_dtype": _dtype_name(self.autocast_dtype) if self.autocast_dtype else "none",
            "compiled": self.compiled,
            "optimizer": "AdamW (fused)" if self.optimizer.defaults.get("fused") else "AdamW",
            "host": socket.gethostname(), "pid": os.getpid(),
        }

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.spec.model.context_length

    def _save(self, step: int, history: list[dict], loop: LoopState) -> None:
        if not self.parallel.is_main:
            return
        # observers first: a crash right after the save must not leave the checkpoint ahead
        # of the metrics it would resume after (the tracker makes them durable here)
        self.observer.before_checkpoint(step, self.checkpoint_path)
        save_checkpoint(self.checkpoint_path, {
            "step": step, "spec": self.spec.model_dump(mode="json"),
            "lora_merged": self.adapters is None and self.cfg.lora is not None,
            "model_config": self.model.cfg.model_dump(mode="json"),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "tokenizer": self.dataset.tokenizer.state(),
            "torch_rng": torch.get_rng_state(), "data_rng": self.data_rng.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "history": history, "loop": asdict(loop), "processes": self.parallel.world,
        })

    def _restore(self) -> tuple[int, list[dict], LoopState]:
        state = load_checkpoint(self.checkpoint_path)
        if state.get("lora_merged"):  # the run's end, saved as plain weights: nothing is left to train
            self._merge_adapters()
        self.model.load_state_dict(state["model"])
        if not state.get("lora_merged"):
            self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.data_rng.set_state(state["data_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["step"], state["history"], LoopState(**state["loop"])

    # ---- the loop --------------------------------------------------------------------------

    def evaluate(self, with_tasks: bool = False) -> dict[str, float]:
        return self.parts.evaluate(with_tasks)

    def run(self, resume: bool = True) -> TrainResult:
        with out_of_memory_fails_the_run("while training"):
            return self._run(resume)

    @property
    def checkpoint_every(self) -> int:
        interval = self.cfg.checkpoint_interval
        return self.cfg.eval_interval if interval is None else interval

    def _run(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        step, history, resumed = 0, [], LoopState()
        if resume and self.checkpoint_path.exists():
            step, history, resumed = self._restore()
        interval_count, start_loss, earlier_wall = resumed.interval_steps, resumed.start_loss, resumed.wall_time_s
        info = self.info()
        info["execution"]["start_step"] = step  # where this attempt took the run up
        self.observer.on_start(info)
        # the curve the checkpoint holds, told again: a tracking store that lost it (deleted, reset,
        # another URI) gets it back, and one that has it skips what it holds (harness.tracking.tracked_run)
        for entry in history:
            self.observer.on_metrics(entry["step"], {k: v for k, v in entry.items() if k != "step"})
        self.model.train()

        interval_loss = torch.zeros((), device=self.device) + resumed.interval_loss_sum
        status, reason = RunState.FINISHED, ""
        wall_start = time.perf_counter()
        timer_start, timer_steps = time.perf_counter(), 0
        trained_steps = 0
        with deferred_interrupt() as interrupted:
            while step < cfg.steps:
                lr = lr_at(step, cfg)
                for _ in range(cfg.grad_accum):
                    x, y = self.dataset.train_batch(cfg.batch_size, self.spec.model.context_length, self.data_rng)
                    loss = self.parts.forward_backward(self.to_device(self.parallel.shard(x)),
                                                       self.to_device(self.parallel.shard(y)))
                    interval_loss += loss.detach() / cfg.grad_accum
                grad_norm = self.parts.optimizer_step(lr)
                step += 1
                trained_steps += 1
                interval_count += 1
                timer_steps += 1
                if start_loss is None:
                    start_loss = self.parallel.mean(loss.detach()).item()

                last = step == cfg.steps
                if step % cfg.log_interval == 0 or last:
                    train_loss = self.parallel.mean(interval_loss).item() / interval_count
                    elapsed = time.perf_counter() - timer_start
                    tokens_per_s = timer_steps * self.tokens_per_step / elapsed
                    metrics = {"train_loss": train_loss, "lr": lr, "grad_norm": float(grad_norm),
                               "tokens": step * self.tokens_per_step, "tokens_per_s": tokens_per_s,
                               "step_time_ms": 1000 * elapsed / timer_steps}
                    utilisation = mfu(self.flops_per_token, tokens_per_s, self.device)
                    if utilisation is not None:
                        metrics["mfu"] = utilisation
                    history.append({"step": step, **metrics})
                    self.observer.on_metrics(step, metrics)
                    notice = self.slowdown.observe(metrics["step_time_ms"], elapsed)
                    if notice:
                        self.observer.on_notice("slowdown", notice)
                    interval_loss.zero_()
                    interval_count = 0
                    reason = self._divergence(train_loss, start_loss)
                    if reason:
                        status = RunState.DIVERGED
                        break
                    timer_start, timer_steps = time.perf_counter(), 0
                if step % cfg.eval_interval == 0 or last:
                    metrics = {"tokens": step * self.tokens_per_step,
                               **self.evaluate(self.parts.evaluation.tasks_due(step, last))}
                    history.append({"step": step, **metrics})
                    self.observer.on_metrics(step, metrics)
                    timer_start, timer_steps = time.perf_counter(), 0
                stop = interrupted()
                if last:  # the final checkpoint holds plain weights: generation and fine-tuning need no adapters
                    self._merge_adapters()
                if (self.checkpoint_every and step % self.checkpoint_every == 0) or last or stop:
                    wall = earlier_wall + time.perf_counter() - wall_start
                    self._save(step, history, LoopState(float(interval_loss), interval_count, start_loss, wall))
                if stop:
                    honour()
            if trained_steps == 0:  # resumed at its end: the model runs once so that its kernels are known
                self.evaluate()
        info.update(self.model.kernel_report())  # known once the model has run
        final = _final_metrics(history)
        final["wall_time_s"] = earlier_wall + time.perf_counter() - wall_start
        # the run's throughput: every token it trained over all its training time (evaluation
        # and earlier attempts included); the curve's last point is one interval's
        final["avg_tokens_per_s"] = step * self.tokens_per_step / final["wall_time_s"]
        final["steps_trained"] = trained_steps
        return TrainResult(status, reason, step, final, history, info)

    def _merge_adapters(self) -> None:
        if self.adapters is not None:
            self.model = merge_lora(self.adapters)
            self.adapters = None

    def _divergence(self, train_loss: float, start_loss: float) -> str:
        if not math.isfinite(train_loss):
            return f"non-finite training loss ({train_loss})"
        if train_loss > self.cfg.divergence_factor * start_loss:
            return (f"training loss {train_loss:.3f} exceeds {self.cfg.divergence_factor} x its start "
                    f"({start_loss:.3f})")
        return ""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _final_metrics(history: list[dict]) -> dict[str, float]:
    """The last value of every metric in the curve."""
    final: dict[str, float] = {}
    for entry in history:
        final.update({k: v for k, v in entry.items() if k != "step"})
    return final
