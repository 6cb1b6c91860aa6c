"""One place builds a run: its starting weights, data, model, optimizer, evaluation batches and
the step it trains with. The trainer trains with what `build_run` returns, and the estimate of
`ablate run --dry-run` times the same step (autocast, compile, fused AdamW), so it measures
what trains.

A study loads each starting point once (`RunInputs`), however many of its runs share it. Each
run draws from its own instance of its dataset: a dataset may keep state between batches (a
plugin's cursor), and a run must not start where the one before it in the process stopped.
Its tokens come from the disk cache, so a second instance costs milliseconds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from harness.config.run import RunSpec
from harness.data import load_dataset
from harness.errors import AblateError
from harness.model.gpt import GPT
from harness.registry import global_state
from harness.training.distributed import DataParallel
from harness.training.evaluation import Evaluation
from harness.training.faults import out_of_memory_fails_the_run
from harness.training.interrupt import deferred_interrupt, honour
from harness.training.lora import trainable_parameters, with_lora
from harness.training.optim import make_optimizer
from harness.training.starting_point import StartingPoint, starting_point


def dataset_key(spec: RunSpec) -> str:
    """Runs that share this key train on the same tokens: the same data, the same tokenizer."""
    return spec.data.model_dump_json() + "|" + str(spec.train.init_from or "")


@dataclass
class RunInputs:
    """The starting points (by `train.init_from`) of a study's runs, each loaded on first use and
    then shared, and the datasets (by `dataset_key`) its plan reads (vocabulary, fingerprints,
    lengths); `fresh_dataset` gives a run its own."""

    starts: dict[str, StartingPoint] = field(default_factory=dict)
    datasets: dict[str, object] = field(default_factory=dict)

    def start(self, spec: RunSpec) -> StartingPoint | None:
        init_from = spec.train.init_from
        if not init_from:
            return None
        if init_from not in self.starts:
            self.starts[init_from] = starting_point(init_from)
        return self.starts[init_from]

    def dataset(self, spec: RunSpec):
        """The run's data, tokenized with its starting point's tokenizer where it has one; shared,
        so only read (never drawn from)."""
        key = dataset_key(spec)
        if key not in self.datasets:
            self.datasets[key] = self.fresh_dataset(spec)
        return self.datasets[key]

    def fresh_dataset(self, spec: RunSpec):
        """A new instance of the run's data, for one run to draw batches from."""
        start = self.start(spec)
        return load_dataset(spec.data, start.tokenizer if start else None)


@dataclass
class RunParts:
    """What one run trains with. `model` holds the weights (checkpointed, sampled from);
    `step_model` is what the step calls (compiled and data-parallel where asked)."""

    spec: RunSpec
    device: torch.device
    parallel: DataParallel
    start: StartingPoint | None
    dataset: object
    model: GPT
    adapters: object  # LoRA adapters until they are merged, else None
    trainable: int  # parameters the optimizer updates, counted before adapters are merged
    optimizer: torch.optim.Optimizer
    evaluation: Evaluation
    autocast_dtype: torch.dtype | None
    compiled: bool
    step_model: torch.nn.Module

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def evaluate(self, with_tasks: bool = False) -> dict[str, float]:
        """The validation metrics of the model as it is now, with its downstream tasks' when
        `with_tasks` (harness.training.evaluation)."""
        return self.evaluation(self, with_tasks)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One micro-batch (B, T) of token ids and targets: the loss under autocast, its share of
        the step's gradient accumulated. Returns the loss (a 0-dim tensor, not synchronised)."""
        with self.autocast():
            _, loss = self.step_model(x, y)
        (loss / self.spec.train.grad_accum).backward()
        return loss

    def optimizer_step(self, lr: float) -> torch.Tensor:
        """Clip the accumulated gradient (train.grad_clip; 0 = no clipping), step at `lr` and
        clear it. Returns the gradient's norm before clipping."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self.spec.train.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


def resolve_device(name: str) -> torch.device:
    """`train.device` as a torch.device (auto: CUDA when there is a GPU, else the CPU). Raises
    AblateError for a name that is no device or a GPU this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AblateError(f"train.device '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AblateError(f"train.device is '{name}' but CUDA is not available here; use device: auto or cpu")
    return device


def build_run(spec: RunSpec, inputs: RunInputs | None = None, parallel: DataParallel | None = None) -> RunParts:
    """Everything `spec` trains with, on its device, its weights initialised from `spec.seed`
    (then loaded from its starting point, if any). `inputs` shares data and starting points
    between runs (default: loaded for this run). Raises AblateError for data shorter than the
    context or a vocabulary smaller than the tokenizer's, RunFailed when it does not fit in
    memory."""
    cfg = spec.train
    inputs = inputs or RunInputs()
    parallel = parallel or DataParallel()
    parallel.check_batch(cfg.batch_size)
    device = parallel.device(resolve_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # what bf16 autocast leaves in fp32 (the loss, the optimizer) may use TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    start, dataset = inputs.start(spec), inputs.fresh_dataset(spec)
    try:
        dataset.check_context(spec.model.context_length)
    except ValueError as err:
        raise AblateError(f"data: {err}") from None
    try:
        model_cfg = (start.model_for(spec.model) if start else spec.model).for_vocabulary(dataset.vocab_size)
    except ValueError as err:
        raise AblateError(str(err)) from None
    torch.manual_seed(spec.seed)
    # building the model and optimizer first imports Triton and torch._dynamo, whose native
    # code calls back into Python: a stop raised inside such a callback aborts the process
    # (SIGABRT, nothing saved), so a request waits until the setup is done
    with deferred_interrupt():
        with out_of_memory_fails_the_run("setting up the run"), _leaves_global_state():
            model = GPT(model_cfg).to(device)
            if start:
                start.load(model)
            adapters = with_lora(model, cfg.lora) if cfg.lora else None
            trainable = trainable_parameters(model)
            optimizer = make_optimizer(model, cfg, device)
            evaluation = Evaluation(dataset, dataset.eval_batches(cfg.batch_size, model_cfg.context_length), device,
                                    spec.eval)
        wanted = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        compiled = cfg.compile if cfg.compile is not None else device.type == "cuda"
        step_model = parallel.wrap(torch.compile(model) if compiled else model)
    honour()
    return RunParts(spec, device, parallel, start, dataset, model, adapters, trainable, optimizer, evaluation,
                    torch.bfloat16 if wanted == "bfloat16" else None, compiled, step_model)


@contextlib.contextmanager
def _leaves_global_state():
    """Refuse a model whose variants changed PyTorch's process-wide state while it was built
    (harness.registry.global_state): the runs after it would compute otherwise under their keys."""
    before = global_state.Snapshot()
    yield
    # initialising weights draws from the global generator, seeded per run just before
    changed = before.changes(ignore=(global_state.RANDOM_STATE,))
    if changed:
        before.restore()
        raise AblateError(f"building the model changed PyTorch's global state ({'; '.join(changed)}); a variant "
                          "must leave it as it found it: make the setting one of its options")
