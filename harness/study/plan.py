"""From a study to its runs: every arm x seed resolved into a RunSpec, the data they need
loaded once (harness.training.build.RunInputs), and an estimate of what training them costs.

Runs are ordered seed-major (every arm's first seed, then every arm's second, ...), so a
study stopped half-way already compares all arms.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import torch

from harness.config.records import PlanRecord
from harness.config.run import RunSpec
from harness.config.study import PER_TOKEN_METRICS, ForecastSettings, ReportSettings, StudySpec, arm_spec
from harness.errors import AblateError
from harness.model.gpt import GPT
from harness.redaction import redact
from harness.registry import lookup
from harness.training.build import RunInputs, build_run, resolve_device
from harness.training.evaluation import metric_names
from harness.training.faults import RunFailed, is_out_of_memory
from harness.training.throughput import PEAK_BF16_FLOPS


@dataclass(frozen=True)
class Tuned:
    """What tuning settled for each arm: its best setting (path -> value), or why it has none
    (every trial of its spent budget ended without a result). An arm without a setting is
    left out of the comparison, and its report says why."""

    best: dict[str, dict[str, Any]]
    dead: dict[str, str] = field(default_factory=dict)


def expand(study: StudySpec, where: str = "study", tuned: Tuned | None = None,
           counts: dict[str, int] | None = None) -> list[RunSpec]:
    """The runs of the study, seed-major. `tuned` gives each arm's best tuned settings
    (arms tuning left without one train nothing); `counts` how many of its seeds each arm
    trains (default: all of them, or a sequential study's first `min`)."""
    tuned = tuned or Tuned({})
    arms = [arm for arm in study.arm_list() if arm.name not in tuned.dead]
    first = study.sequential.min if study.sequential else None
    seeds = {arm.name: study.arm_seeds(arm)[:(counts or {}).get(arm.name, first)] for arm in arms}
    runs = []
    for label, scale in study.scale_list():
        per_arm = {arm.name: arm_spec(study, arm, where, tuned.best.get(arm.name), scale) for arm in arms}
        if study.match == "params":  # within a scale: the arms of one size
            from harness.study.matching import match_parameters

            per_arm = match_parameters(per_arm, study.baseline, where)
        runs += [per_arm[arm.name].model_copy(update={"seed": seed, "arm": scaled_name(arm.name, label)})
                 for index in range(max(map(len, seeds.values())))
                 for arm in arms for seed in seeds[arm.name][index:index + 1]]
    _refuse_shared_runs(runs, where)
    return runs


def scaled_name(arm: str, scale: str) -> str:
    """An arm's name at one scale of a study with scales: `rmsnorm@d_model=64`."""
    return f"{arm}@{scale}" if scale else arm


def _refuse_shared_runs(runs: list[RunSpec], where: str) -> None:
    """Two arms that resolve to the same run would share it, and one of them would vanish from
    the report: a plan gives every arm runs of its own."""
    owner: dict[str, str] = {}
    for spec in runs:
        other = owner.setdefault(spec.key(), spec.arm)
        if other != spec.arm:
            raise AblateError(
                f"{where}: arms '{other}' and '{spec.arm}' resolve to the same configuration (seed {spec.seed} "
                "is the same run in both), so they would share their runs. Make them differ, or drop one. To "
                f"compare a configuration with itself (an A/A control), give the copy seeds of its own, e.g. "
                f"`seeds: [100, 101, 102]` in arm '{spec.arm}'")


def plan_record(study: StudySpec, runs: list[RunSpec], study_file: str, tuned: Tuned | None = None) -> PlanRecord:
    """What an execution sets out to train, recorded on its parent run: its report covers
    exactly these runs, shows each arm's resolved configuration, and names the arms that
    tuning left without a setting."""
    arms: dict[str, dict] = {}
    # at each scale, which arm a scaled arm is, and which arm is the baseline
    scales = {scaled_name(arm.name, label): {"variant": arm.name, "scale": label,
                                             "baseline": scaled_name(study.baseline, label)}
              for label, _ in study.scale_list() if label for arm in study.arm_list()}
    for spec in runs:
        arms.setdefault(spec.arm, spec.model_dump(mode="json", include={"model", "train", "data", "sources"}))
    plan = {"study": study.name, "description": study.description, "study_file": study_file,
            "baseline": study.baseline, "metric": study.report.metric, "goal": study.report.goal,
            "tuned": list(study.tune.space) if study.tune else [],
            "untuned": [{"name": arm.name, "reason": tuned.dead[arm.name],
                         "config": arm_spec(study, arm).model_dump(mode="json", include={"model", "train", "data"})}
                        for arm in study.arm_list() if tuned and arm.name in tuned.dead],
            "seeds": sorted({spec.seed for spec in runs}),
            "sequential": study.seeds.model_dump() if study.sequential else None,
            "arms": [{"name": name, "config": config, **scales.get(name, {})} for name, config in arms.items()],
            "scales": [{"label": label, "settings": settings} for label, settings in study.scale_list() if label],
            "forecast": (study.report.forecast or ForecastSettings()).model_dump() if study.scales else None,
            "runs": [{"arm": spec.arm, "seed": spec.seed, "run_key": spec.key()} for spec in runs]}
    return PlanRecord.model_validate_json(redact(json.dumps(plan)))  # a data URL's password is not part of it


def resolve(study: StudySpec, where: str = "study", tuned: Tuned | None = None,
            counts: dict[str, int] | None = None, locate: Callable[[RunSpec], RunSpec] | None = None,
            inputs: RunInputs | None = None) -> list[RunSpec]:
    """The runs of `expand`, complete (see `complete`), with the study's metric checked
    against what they log (`check_metric`)."""
    inputs = inputs if inputs is not None else RunInputs()
    specs = complete(expand(study, where, tuned, counts), locate, inputs)
    check_metric(study.report, specs, inputs)
    return specs


def complete(specs: list[RunSpec], locate: Callable[[RunSpec], RunSpec] | None = None,
             inputs: RunInputs | None = None) -> list[RunSpec]:
    """The runs with their starting points found (`locate` turns another study's run into its
    checkpoint), the architecture a Hugging Face start brings, their data loaded into `inputs`
    and checked, and their sources filled in."""
    inputs = inputs if inputs is not None else RunInputs()
    specs = [locate(spec) if locate else spec for spec in specs]
    for spec in specs:
        try:
            inputs.start(spec)
        except RunFailed as err:  # an unusable checkpoint: nothing of the study trains
            raise AblateError(f"arm '{spec.arm}': train.init_from: {err}") from None
    specs = [with_start_model(spec, inputs) for spec in specs]
    check_data(specs, inputs)
    return with_sources(specs, inputs)


def with_start_model(spec: RunSpec, inputs: RunInputs) -> RunSpec:
    start = inputs.start(spec)
    if start is None:
        return spec
    try:
        return spec.model_copy(update={"model": start.model_for(spec.model)})
    except AblateError as err:
        raise AblateError(f"arm '{spec.arm}': {err}") from None


def with_sources(specs: list[RunSpec], inputs: RunInputs) -> list[RunSpec]:
    """The runs with what decides their numbers beyond their configuration made part of their
    identity: the data's content hash, the tokenizer's, the starting weights', the downstream
    tasks' examples, and the code of
    every plugin variant they use, beside the plugins their study loads (ablate's own code is
    covered by the version recorded on every run)."""
    resolved = []
    for spec in specs:
        dataset = inputs.dataset(spec)
        sources = {**spec.sources, "data": dataset.metadata.get("sha256", ""),
                   "tokenizer": dataset.tokenizer.fingerprint()}
        if spec.train.init_from:
            sources["init_from"] = inputs.start(spec).identity
        if spec.eval is not None:  # the questions the tasks ask, by content
            from harness.downstream.tasks import task_fingerprint

            sources["eval"] = task_fingerprint(spec.eval)
        for slot, name in spec.variants():
            code = lookup(slot, name).code
            if code:
                sources[f"{slot}.{name}"] = code
        resolved.append(spec.model_copy(update={"sources": sources}))
    return resolved


def check_data(specs: list[RunSpec], inputs: RunInputs) -> None:
    """Load each distinct dataset once, before any training, with the tokenizer of the run's
    starting point if it has one: a missing file, a context longer than the data or a
    vocabulary smaller than the tokenizer's fails here."""
    for spec in specs:
        dataset = inputs.dataset(spec)
        try:
            dataset.check_context(spec.model.context_length)
            spec.model.for_vocabulary(dataset.vocab_size)
        except ValueError as err:
            raise AblateError(f"arm '{spec.arm}': {err}") from None


def check_metric(report: ReportSettings, specs: list[RunSpec], inputs: RunInputs) -> None:
    """Refuse a report metric that some run does not log (harness.training.evaluation: its
    validation metrics and its downstream tasks', whose data, names and text are checked here,
    before any training), a task metric whose goal is the wrong way round, and a per-token metric
    (val_loss) where arms tokenize differently: a token of one arm is not a token of another,
    so their losses per token do not compare; bits per byte do."""
    metric = report.metric
    task_metrics: dict[str, dict[str, bool]] = {}  # per eval config (as JSON): metric -> higher is better
    readable: set[tuple[str, str]] = set()  # (eval config, tokenizer) whose task text the tokenizer encodes
    for spec in specs:
        tasks = spec.eval.model_dump_json() if spec.eval is not None else ""
        if tasks and tasks not in task_metrics:
            from harness.downstream.tasks import check_tasks

            task_metrics[tasks] = check_tasks(spec.eval)
        scored = task_metrics.get(tasks, {})
        if tasks and (tasks, inputs.dataset(spec).tokenizer.fingerprint()) not in readable:
            from harness.downstream.tasks import check_readable

            check_readable(spec.eval, inputs.dataset(spec).tokenizer)
            readable.add((tasks, inputs.dataset(spec).tokenizer.fingerprint()))
        logged = metric_names(inputs.dataset(spec), scored)
        if metric not in logged:
            raise AblateError(f"report.metric: arm '{spec.arm}' does not log '{metric}'; its runs log "
                              f"{', '.join(logged)}")
        if metric in scored and scored[metric] != (report.goal == "maximize"):
            raise AblateError(f"report.goal: for {metric}, {'higher' if scored[metric] else 'lower'} is better; set "
                              f"`report: {{metric: {metric}, goal: {'maximize' if scored[metric] else 'minimize'}}}` "
                              "or leave the goal out")
    tokenizers = {}
    for spec in specs:
        tokenizers.setdefault(inputs.dataset(spec).tokenizer.fingerprint(), spec)
    if metric in PER_TOKEN_METRICS and len(tokenizers) > 1:
        first, other = list(tokenizers.values())[:2]
        raise AblateError(f"report.metric: {metric} is per token, and arms '{first.arm}' and '{other.arm}' use "
                          "different tokenizers, so their tokens differ and so do their losses per token; compare "
                          "them on val_bpb (bits per byte of the same text): `report: {metric: val_bpb}`")


def measure_step_seconds(spec: RunSpec, inputs: RunInputs, steps: int = 3, warmup: int = 2) -> float:
    """Seconds of one optimizer step of this run, built as it trains (harness.training.build:
    autocast, compile and fused AdamW as on its device), on random tokens: the fastest of
    `steps` timed steps after `warmup` untimed ones (which also pay for compilation). The
    first steps pay for allocation and the thread pool, and a busy machine slows some steps:
    the fastest is the arm's own cost, so arms measured one after another compare fairly."""
    parts = build_run(spec, inputs)
    x = torch.randint(parts.dataset.vocab_size, (spec.train.batch_size, spec.model.context_length),
                      device=parts.device)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        for _ in range(spec.train.grad_accum):
            parts.forward_backward(x, x)
        parts.optimizer_step(spec.train.lr)
        if parts.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[warmup:])


def _step_seconds(spec: RunSpec, inputs: RunInputs) -> float:
    try:
        return measure_step_seconds(spec, inputs)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        raise AblateError(f"arm '{spec.arm}': one training step does not fit in memory on "
                          f"{resolve_device(spec.train.device)} (batch_size {spec.train.batch_size}, context_length "
                          f"{spec.model.context_length}); lower train.batch_size (train.grad_accum keeps the tokens "
                          "per step) or the model's size") from None


# a run meant for a GPU this machine does not have is estimated from its FLOPs: an H100's bf16
# peak (harness.training.throughput) at the utilisation a tuned GPT-2 small reaches (nanoGPT, llm.c)
ASSUMED_GPU, ASSUMED_MFU = "H100", 0.4


def estimate(specs: list[RunSpec], inputs: RunInputs, settled: set[str]) -> pd.DataFrame:
    """One row per arm: its planned runs, how many of them are `settled` already, its size, cost
    per token, tokens per run, how often a run sees its training data (`data_epochs`) and tokens
    per non-embedding parameter, and the seconds per run: measured on this machine, or, for a run
    that asks for CUDA where there is none, from its FLOPs on an ASSUMED_GPU at ASSUMED_MFU
    (`time_from` says which)."""
    first: dict[str, RunSpec] = {}
    for spec in specs:
        first.setdefault(spec.arm, spec)
    rows = []
    for spec in first.values():
        dataset = inputs.dataset(spec)
        with torch.device("meta"):
            model = GPT(spec.model.for_vocabulary(dataset.vocab_size))
        tokens = spec.train.steps * spec.train.batch_size * spec.train.grad_accum * spec.model.context_length
        train_tokens = getattr(dataset, "metadata", {}).get("train_tokens")
        elsewhere = spec.train.device.startswith("cuda") and not torch.cuda.is_available()
        if elsewhere:
            seconds = model.flops_per_token() * tokens / (PEAK_BF16_FLOPS[ASSUMED_GPU] * ASSUMED_MFU)
        else:
            seconds = _step_seconds(spec, inputs) * spec.train.steps
        rows.append({
            "arm": spec.arm, "runs": sum(s.arm == spec.arm for s in specs),
            "finished": sum(s.arm == spec.arm and s.key() in settled for s in specs),
            "params_non_embedding": model.num_parameters(non_embedding=True),
            "flops_per_token": model.flops_per_token(),
            "tokens_per_run": tokens,
            "data_epochs": tokens / train_tokens if train_tokens else float("nan"),
            "tokens_per_param": tokens / model.num_parameters(non_embedding=True),
            "seconds_per_run": seconds,
            "time_from": f"FLOPs: {ASSUMED_GPU} bf16 at {ASSUMED_MFU:.0%} MFU" if elsewhere
                         else f"measured on {resolve_device(spec.train.device)}",
        })
    return pd.DataFrame(rows)
