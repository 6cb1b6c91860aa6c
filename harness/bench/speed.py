"""`ablate bench speed`: how fast a GPT trains here, and where the time goes.

Three tables, measured in one process:
- training throughput (tokens/s, MFU) of one model shape under each attention backend,
  eager and compiled, beside a plain nanoGPT-style model of the same shape; ablate's rows time
  the step its trainer takes (harness.training.build), nanoGPT's the loop of its train.py;
- our Triton kernels (forward + backward) against torch eager and torch.compile;
- the trainer against a bare loop (`overhead`), at the same shape.

On a GPU the shape is GPT-2 small (12 x 768, 12 heads, context 1024, vocab 50304) in bf16;
on the CPU a small shape stands in for it, and the tables say so.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from harness.bench.nanogpt import NanoGPT
from harness.bench.ratios import overhead
from harness.config.model import ModelConfig
from harness.config.run import RunSpec
from harness.config.train import TrainConfig
from harness.kernels import triton_unavailable
from harness.model.attention import backend, backend_names
from harness.model.gpt import GPT
from harness.training.build import build_run, resolve_device
from harness.training.optim import make_optimizer
from harness.training.throughput import mfu


@dataclass(frozen=True)
class Shape:
    n_layer: int
    d_model: int
    n_head: int
    context_length: int
    vocab_size: int
    batch_size: int

    def describe(self) -> str:
        return (f"{self.n_layer} x {self.d_model}, {self.n_head} heads, context {self.context_length}, "
                f"vocab {self.vocab_size}, batch {self.batch_size}")

    def model(self) -> dict:
        # nanoGPT's defaults: no biases, GELU MLP, learned positions, tied embeddings
        return dict(n_layer=self.n_layer, d_model=self.d_model, n_head=self.n_head,
                    context_length=self.context_length, vocab_size=self.vocab_size, bias=False)


GPT2_SMALL = Shape(12, 768, 12, 1024, 50304, batch_size=16)
CPU_SHAPE = Shape(2, 128, 4, 128, 512, batch_size=4)


@dataclass
class SpeedReport:
    device: str
    shape: Shape
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"device: {self.device}; shape: {self.shape.describe()}"]
        for title, table in self.tables.items():
            lines += ["", title, table.to_markdown(index=False, floatfmt=".4g")]
        return "\n".join(lines + [""] + [f"note: {note}" for note in self.notes])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_per_call(fn, device: torch.device, warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        fn()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    _synchronize(device)
    return (time.perf_counter() - start) / iterations


def _nanogpt_step(shape: Shape, device: torch.device, compiled: bool):
    """The reference: nanoGPT's training step on random tokens (forward, backward, clip, fused
    AdamW, bf16 autocast on a GPU), written out as nanoGPT's train.py writes it."""
    torch.manual_seed(0)
    model = NanoGPT(**shape.model()).to(device)
    step_model = torch.compile(model) if compiled else model
    optimizer = make_optimizer(model, TrainConfig(), device)
    x, y = _random_batch(shape, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step():
        with autocast:
            _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _ablate_step(shape: Shape, device: torch.device, compiled: bool, attention: str) -> tuple[GPT, callable]:
    """The step ablate's trainer takes (harness.training.build), on random tokens of `shape`."""
    parts = build_run(RunSpec(model={**shape.model(), "attention_backend": attention},
                              train=dict(batch_size=shape.batch_size, device=str(device), compile=compiled),
                              data={"dataset": {"name": "random", "vocab_size": shape.vocab_size},
                                    "val_windows": shape.batch_size}))
    x, y = _random_batch(shape, device)

    def step():
        parts.forward_backward(x, y)
        parts.optimizer_step(parts.spec.train.lr)

    return parts.model, step


def _random_batch(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(shape.vocab_size, (2, shape.batch_size, shape.context_length), device=device).unbind(0)


def _throughput_row(label, backend, compiled, make_step, device, shape, steps, flops_per_token) -> dict:
    row = {"model": label, "attention": backend, "compiled": "yes" if compiled else "no"}
    if backend == "triton" and device.type == "cpu":
        return {**row, "tokens/s": float("nan"), "MFU": "", "note": "not timed: Triton runs on the CPU only interpreted"}
    try:
        model, step = make_step()
        seconds = _seconds_per_call(step, device, warmup=3, iterations=steps)
    except Exception as err:  # a backend or compile failure is a row of the table, not the end of it
        return {**row, "tokens/s": float("nan"), "MFU": "", "note": f"failed: {str(err).splitlines()[0][:120]}"}
    tokens_per_s = shape.batch_size * shape.context_length / seconds
    utilisation = mfu(flops_per_token, tokens_per_s, device)
    note = ""
    if model is not None:
        report = model.attention_kernel.report()
        if report["attention_backend"] != backend:
            note = f"ran {report['attention_backend']}: {report['attention_backend_fallbacks']}"
    del model, step
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next row's model starts from an empty device
    return {**row, "tokens/s": tokens_per_s, "MFU": f"{utilisation:.1%}" if utilisation else "", "note": note}


def throughput_table(device: torch.device, shape: Shape, steps: int, compile_modes: tuple[bool, ...]) -> pd.DataFrame:
    flops = GPT(ModelConfig(**shape.model())).flops_per_token()
    rows = []
    for compiled in compile_modes:
        rows.append(_throughput_row("nanoGPT-style", "sdpa", compiled,
                                    lambda: (None, _nanogpt_step(shape, device, compiled)),
                                    device, shape, steps, flops))
        for name in backend_names():
            if name != "auto":
                rows.append(_throughput_row("ablate GPT", name, compiled,
                                            lambda: _ablate_step(shape, device, compiled, name),
                                            device, shape, steps, flops))
    table = pd.DataFrame(rows)
    anchor = table[table["model"] == "nanoGPT-style"].set_index("compiled")["tokens/s"]
    table.insert(4, "vs nanoGPT", (table["tokens/s"] / table["compiled"].map(anchor)).map(_ratio))
    table["tokens/s"] = table["tokens/s"].map(lambda v: "" if v != v else f"{v:,.0f}")
    return table


def _ratio(value: float) -> str:
    return "" if value != value else f"{value:.3f}"


def kernel_table(device: torch.device, shape: Shape, iterations: int, compiled: bool = True) -> pd.DataFrame:
    """Forward + backward time of each Triton kernel against torch eager (and torch.compile)
    on the activations of one training batch of `shape`, in bf16 on a GPU."""
    from harness.kernels.flash_attention import flash_attention
    from harness.kernels.references import rms_norm_reference, swiglu_reference
    from harness.kernels.rmsnorm import rms_norm
    from harness.kernels.swiglu import swiglu

    rows_of_tokens = shape.batch_size * shape.context_length
    hidden = round(2 / 3 * 4 * shape.d_model)
    head_dim = shape.d_model // shape.n_head
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = torch.randn(rows_of_tokens, shape.d_model, device=device, dtype=dtype)
    weight = torch.ones(shape.d_model, device=device, dtype=dtype)
    gate_up = torch.randn(rows_of_tokens, 2 * hidden, device=device, dtype=dtype)
    qkv = torch.randn(3, shape.batch_size, shape.n_head, shape.context_length, head_dim, device=device, dtype=dtype)

    def sdpa(q, k, v):
        return backend("sdpa")(q, k, v, bias=None, causal=True, dropout_p=0.0, scale=head_dim ** -0.5)

    cases = [
        ("rmsnorm", f"{rows_of_tokens} x {shape.d_model}", lambda x, w: rms_norm(x, w, 1e-6),
         lambda x, w: rms_norm_reference(x, w, 1e-6), (x, weight)),
        ("swiglu", f"{rows_of_tokens} x 2*{hidden}", swiglu, swiglu_reference, (gate_up,)),
        ("attention (vs sdpa)", f"{shape.batch_size} x {shape.n_head} x {shape.context_length} x {head_dim}",
         lambda q, k, v: flash_attention(q, k, v, head_dim ** -0.5), sdpa, tuple(qkv.unbind(0))),
    ]
    table = []
    for name, size, ours, reference, inputs in cases:
        leaves = [t.clone().requires_grad_() for t in inputs]
        upstream = torch.randn_like(reference(*leaves))

        def forward_backward(fn):
            return lambda: torch.autograd.backward(fn(*leaves), upstream)

        contenders = [("triton", ours), ("eager", reference)] + [("compiled", torch.compile(reference))] * compiled
        times = {label: _seconds_per_call(forward_backward(fn), device, warmup=2, iterations=iterations)
                 for label, fn in contenders}
        table.append({"kernel": name, f"shape ({str(dtype).removeprefix('torch.')})": size,
                      **{f"{label} ms": 1000 * t for label, t in times.items()},
                      **{f"{label}/triton": times[label] / times["triton"] for label in times if label != "triton"}})
    return pd.DataFrame(table)


def speed(run_dir, steps: int = 20, compile_modes: tuple[bool, ...] = (False, True), device: str = "auto") -> SpeedReport:
    target = resolve_device(device)
    on_gpu = target.type == "cuda"
    shape = GPT2_SMALL if on_gpu else CPU_SHAPE
    name = torch.cuda.get_device_name(target) if on_gpu else "CPU"
    report = SpeedReport(name, shape)
    if not on_gpu:
        report.notes.append("no GPU here: a small shape stands in for GPT-2 small, in fp32; MFU needs a GPU's peak")

    report.tables["training throughput (random tokens; forward, backward, clip, AdamW)"] = throughput_table(
        target, shape, steps, compile_modes)
    if not on_gpu:
        report.notes.append("kernel timings skipped: Triton kernels are timed only on a GPU "
                            "(the CPU interpreter is for testing, not speed)")
    elif reason := triton_unavailable(target):
        report.notes.append(f"kernel timings skipped: {reason}")
    else:
        report.tables["Triton kernels, forward + backward (ratio > 1: ours is faster)"] = kernel_table(
            target, shape, iterations=max(steps, 10), compiled=True in compile_modes)

    compiled = on_gpu and True in compile_modes
    ratio = overhead(run_dir, steps=max(steps, 20), repeats=3, batch_size=shape.batch_size, model=shape.model(),
                     data={"dataset": {"name": "random", "vocab_size": shape.vocab_size}},
                     device=str(target), compile=compiled)
    harness, bare = ratio.measured_ms["harness"], ratio.measured_ms["bare loop"]
    tokens = shape.batch_size * shape.context_length
    report.tables["ablate's trainer against a bare loop of the same model (auto attention)"] = pd.DataFrame([
        {"loop": "bare", "compiled": "yes" if compiled else "no", "ms/step": bare, "tokens/s": round(1000 * tokens / bare)},
        {"loop": "ablate Trainer", "compiled": "yes" if compiled else "no", "ms/step": harness,
         "tokens/s": round(1000 * tokens / harness)},
    ])
    report.notes.append(f"harness/bare: {ratio.ratio:.3f} (1.00 = no overhead)")
    return report
