"""The `ablate` command line.

User mistakes raise AblateError anywhere below; :func:`main` turns them into one message
on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness import registry
from harness.errors import AblateError
from harness.progress import RunProgress, make_progress
from harness.redaction import redact

app = typer.Typer(help="Ablation studies of GPT blocks, tracked in MLflow.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

PluginOption = Annotated[Optional[list[str]], typer.Option(
    "--plugin", help="module name or .py file registering variants (repeatable)")]


class Interrupted(Exception):
    """Ctrl-C in a long command; carried past typer, which would turn it into a bare 'Aborted!'."""


def interruptible(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    return wrapper


def load_plugins(plugins: list[str] | None) -> None:
    for plugin in plugins or []:
        registry.load_plugin(plugin)


@app.command()
def variants(
    as_json: Annotated[bool, typer.Option("--json", help="print {slot: [names...]}")] = False,
    plugin: PluginOption = None,
):
    """List every registered variant: slot, name, options with defaults, and origin."""
    load_plugins(plugin)
    found = registry.variants()
    if as_json:
        names = {slot: [v.name for v in found if v.slot == slot] for slot in registry.SLOTS}
        typer.echo(json.dumps(names, indent=2))
        return
    table = Table(title="registered variants")
    for column in ("slot", "name", "options (default)", "from", "what it is"):
        table.add_column(column, overflow="fold")
    for variant in found:
        options = ", ".join(
            f"{name}={'required' if field.is_required() else field.default}"
            for name, field in variant.options.model_fields.items()
        )
        table.add_row(variant.slot, variant.name, options or "-", variant.source, variant.summary)
    Console(width=200).print(table)


SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override a study field: path.to.field=value (repeatable)")]


@app.command()
@interruptible
def train(
    run_file: Annotated[Path, typer.Argument(help="a study file with one arm")],
    set_: SetOption = None,
    plugin: PluginOption = None,
    seed: Annotated[Optional[int], typer.Option(help="seed (default: the study's first)")] = None,
    out: Annotated[Path, typer.Option(help="folder for the run's checkpoint")] = Path("runs"),
    fresh: Annotated[bool, typer.Option(help="start over instead of resuming from a checkpoint")] = False,
):
    """Train a single run and save its checkpoint."""
    from harness.study import expand, load_study
    from harness.training.trainer import Trainer

    load_plugins(plugin)
    study = load_study(run_file, set_)
    if len(study.arm_list()) > 1:
        raise AblateError(f"{run_file} has {len(study.arm_list())} arms; `ablate train` runs one, `ablate run` a study")
    spec = expand(study, str(run_file))[0]
    if seed is not None:
        spec = spec.model_copy(update={"seed": seed})
    run_dir = out / study.name / spec.key()
    if fresh and (run_dir / "checkpoint.pt").exists():
        (run_dir / "checkpoint.pt").unlink()
    with make_progress() as progress:
        result = Trainer(spec, run_dir, RunProgress(progress, f"{study.name} seed {spec.seed}", spec.train.steps)).run()
    metrics = ", ".join(f"{k}={result.metrics[k]:.4g}" for k in ("train_loss", "val_loss", "val_exact_match", "tokens_per_s")
                        if k in result.metrics)
    typer.echo(f"{result.status} after {result.steps} steps: {metrics}")
    typer.echo(f"checkpoint: {run_dir / 'checkpoint.pt'}")
    if result.status == "diverged":
        raise AblateError(f"the run diverged: {result.reason}; its curve up to then is kept. Lower train.lr or add warmup")


@app.command()
def generate(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint written by ablate train/run")],
    prompt: Annotated[str, typer.Option(help="text to continue")] = "\n",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option(min=1)] = 50,
    seed: int = 0,
    device: str = "auto",
):
    """Sample text from a checkpoint."""
    from harness.sampling import sample_from_checkpoint

    typer.echo(sample_from_checkpoint(checkpoint, prompt, max_new_tokens, temperature, top_k, seed, device))


TrackingOption = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default)")]


StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", envvar="ABLATE_STORAGE", show_envvar=False,
    help="Optuna storage of the study ledger (default: $ABLATE_STORAGE, else sqlite:///optuna.db; "
         "postgresql://... for many machines)")]
ProfileOption = Annotated[Optional[str], typer.Option(help="apply a named profile of the study (e.g. gpu)")]
RunsDirOption = Annotated[Path, typer.Option(help="folder for checkpoints (share it between workers to resume)")]


def _prepare(study_file: Path, set_, plugin, profile):
    """Everything a user can get wrong fails here, before MLflow or the ledger is touched."""
    from harness.executor import check_data
    from harness.study import expand, load_study

    load_plugins(plugin)
    study = load_study(study_file, set_, profile)
    specs = expand(study, str(study_file))
    return study, specs, check_data(specs)


@app.command()
@interruptible
def run(
    study_file: Annotated[Path, typer.Argument(help="a study YAML file")],
    set_: SetOption = None,
    plugin: PluginOption = None,
    profile: ProfileOption = None,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    jobs: Annotated[int, typer.Option(min=0, help="local workers (one per GPU when there are GPUs); "
                                                  "0 only plans the study for `ablate worker`s")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and train nothing")] = False,
    runs_dir: RunsDirOption = Path("runs"),
    reports_dir: Annotated[Path, typer.Option(help="folder for reports")] = Path("reports"),
):
    """Train every arm x seed of a study, track it in MLflow, and write its report."""
    from harness.executor import print_plan, work
    from harness.ledger import DEFAULT_STORAGE, Ledger
    from harness.report import build_report
    from harness.tracking import Tracker

    study, specs, datasets = _prepare(study_file, set_, plugin, profile)
    if dry_run:
        print_plan(study, specs, datasets, Console())
        return
    console = Console(stderr=True)
    tracker = Tracker(tracking_uri)
    _send_kept(tracker, runs_dir / study.name, console)
    storage = storage or DEFAULT_STORAGE
    ledger = Ledger(storage, study.name)
    parent = tracker.start_study(tracker.experiment_id(study.name), study, len(specs), str(study_file))
    ledger.open(parent)
    workers = []
    try:
        if jobs > 1:  # they tune (when the study tunes), then train what the plan below queues
            workers = _start_workers(jobs, study_file, set_, plugin, profile, tracker.uri, storage, runs_dir)
        if jobs == 0:
            options = [*(f"--set {s}" for s in set_ or []), *(f"--plugin {p}" for p in plugin or []),
                       *([f"--profile {profile}"] if profile else [])]
            console.print(f"start workers with: ablate worker {study_file} --storage {redact(storage)} "
                          f"--tracking-uri {redact(tracker.uri)} {' '.join(options)}".rstrip(), soft_wrap=True)
        if study.tune:
            specs, datasets = _tuned(study, study_file, ledger, tracker, runs_dir, console,
                                     tune_here=jobs == 1, parent=parent)
        ledger.release_dead_local_claims()  # an `ablate run` killed here before: its run goes back in the queue
        queued = ledger.plan([spec.key() for spec in specs])
        console.print(f"{len(specs)} runs planned, {queued} queued, "
                      f"{len(specs) - queued} finished or in progress already")
        if jobs == 0:  # the workers train; `ablate report` once they are done
            tracker.end_study(parent)
            return
        if jobs == 1:
            outcome = work(study, specs, datasets, tracker, ledger, runs_dir, console)
            console.print(f"{outcome.trained} runs trained")
        else:
            _wait_for(workers)
    except BaseException:
        for process in workers:
            process.terminate()
        with contextlib.suppress(Exception):  # the store may be what failed
            tracker.end_study(parent, "KILLED")
        raise
    _send_kept(tracker, runs_dir / study.name, console)
    tracker.patiently(lambda: tracker.end_study(parent), "ending the study")
    result = tracker.patiently(lambda: build_report(tracker, study.name, reports_dir, parent), "reading the study back")
    console.print(f"report: {result.folder / 'report.md'}")
    for row in result.results[result.results["state"] != "finished"].itertuples():
        console.print(f"[yellow]{row.state}:[/] {row.arm} seed {row.seed}: {row.failure_reason}")
    typer.echo((result.folder / "report.md").read_text().split("## Arms")[0].rstrip())


def _send_kept(tracker, folder: Path, console: Console) -> None:
    """Send what runs kept on disk while the tracking store was unreachable."""
    sent = tracker.patiently(lambda: tracker.send_kept(folder), "sending kept records")
    if sent:
        console.print(f"sent the tracking records that {sent} runs kept while the tracking store was away")


def _tuned(study, study_file, ledger, tracker, runs_dir, console, tune_here: bool, parent: str):
    """The study's runs with each arm's best tuned setting, after tuning here or waiting for workers."""
    from harness.tuning import tune_all, wait_for_tuning

    if tune_here:
        with make_progress(console) as progress:
            tune_all(study, ledger.storage, tracker, parent, runs_dir, progress)
    else:
        console.print("waiting for the workers to tune every arm")
        wait_for_tuning(study, ledger.storage)
    return _best_specs(study, study_file, ledger)


def _best_specs(study, study_file, ledger):
    from harness.executor import check_data
    from harness.study import expand
    from harness.tuning import best_settings

    specs = expand(study, str(study_file), best_settings(study, ledger.storage))
    return specs, check_data(specs)


def _start_workers(jobs, study_file, set_, plugin, profile, tracking_uri, storage, runs_dir) -> list:
    """N `ablate worker` processes on this machine, one GPU each when there are GPUs."""
    import os
    import subprocess

    import torch

    # the URLs go by environment, not argv, where any user of the machine could read a password
    command = [sys.executable, "-m", "harness.cli", "worker", str(study_file), "--runs-dir", str(runs_dir)]
    command += [a for s in set_ or [] for a in ("--set", s)] + [a for p in plugin or [] for a in ("--plugin", p)]
    command += ["--profile", profile] if profile else []
    gpus = torch.cuda.device_count()
    workers = []
    for index in range(jobs):
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "ABLATE_STORAGE": storage}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        workers.append(subprocess.Popen(command, env=env))
    return workers


def _wait_for(workers: list) -> None:
    codes = [process.wait() for process in workers]
    if any(codes):
        raise AblateError(f"{sum(1 for c in codes if c)} of {len(workers)} workers failed (exit codes {codes}); "
                          "run the same command again to finish the study")


@app.command()
@interruptible
def worker(
    study_file: Annotated[Path, typer.Argument(help="the study file given to `ablate run`")],
    storage: StorageOption = None,
    set_: SetOption = None,
    plugin: PluginOption = None,
    profile: ProfileOption = None,
    tracking_uri: TrackingOption = None,
    runs_dir: RunsDirOption = Path("runs"),
):
    """Claim and train queued runs of a planned study until none is left (start any number)."""
    from harness.executor import work
    from harness.ledger import DEFAULT_STORAGE, Ledger
    from harness.tracking import Tracker

    study, specs, datasets = _prepare(study_file, set_, plugin, profile)
    tracker = Tracker(tracking_uri)
    console = Console(stderr=True)
    _send_kept(tracker, runs_dir / study.name, console)
    ledger = Ledger(storage or DEFAULT_STORAGE, study.name)
    if study.tune:  # help tune every arm; the runs are planned once every arm's budget is spent
        from harness.tuning import tune_all

        with make_progress(console) as progress:
            tune_all(study, ledger.storage, tracker, ledger.parent_run_id(), runs_dir, progress)
    ledger.wait_until_planned()
    if study.tune:
        specs, datasets = _best_specs(study, study_file, ledger)
    outcome = work(study, specs, datasets, tracker, ledger, runs_dir, console)
    typer.echo(f"worker done: {outcome.trained} runs trained, {outcome.done_already} found finished in MLflow")


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="study name (the MLflow experiment) or study file")],
    tracking_uri: TrackingOption = None,
    reports_dir: Annotated[Path, typer.Option(help="folder for reports")] = Path("reports"),
):
    """Rebuild a study's report from what MLflow holds."""
    from harness.report import build_report
    from harness.tracking import Tracker

    name = study
    if study.endswith((".yaml", ".yml")):
        from harness.study import load_study

        name = load_study(study).name
    result = build_report(Tracker(tracking_uri), name, reports_dir)
    typer.echo(f"report: {result.folder / 'report.md'}")


# MLflow's UI opens experiments in its GenAI view unless asked for the model-training one
UI_VIEW = "workflowType=machine_learning"


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless you mean to share")] = "127.0.0.1",
    port: int = 5000,
    tracking_uri: TrackingOption = None,
):
    """Start the MLflow UI on this machine's loopback address."""
    import os

    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI on http://{host}:{port}/#/experiments?{UI_VIEW} (store {redact(uri)}); Ctrl-C stops it")
    # the store goes by environment, not argv, where any user of the machine could read a password
    os.execvpe(command[0], command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


bench_app = typer.Typer(help="Benchmarks measured in one process; with no subcommand, `speed`.",
                        invoke_without_command=True)
app.add_typer(bench_app, name="bench")


BenchSteps = Annotated[int, typer.Option(min=20, help="timed steps per repeat")]
BenchRepeats = Annotated[int, typer.Option(min=1, help="alternating repeats; the median is reported")]


def _bench(name: str, steps: int, repeats: int) -> None:
    import tempfile

    from harness import bench

    with tempfile.TemporaryDirectory() as run_dir:
        typer.echo(getattr(bench, name)(run_dir, steps=steps, repeats=repeats).text())


@bench_app.callback()
def bench_default(ctx: typer.Context):
    if ctx.invoked_subcommand is None:
        bench_speed()


@bench_app.command("speed")
def bench_speed(steps: Annotated[int, typer.Option(min=3, help="timed training steps per row")] = 20,
                eager_only: Annotated[bool, typer.Option("--eager-only", help="skip the torch.compile rows")] = False,
                device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto"):
    """Tokens/s and MFU per attention backend (eager and compiled) beside a nanoGPT-style
    model, our Triton kernels against torch eager and compile, and trainer/bare loop.
    GPT-2 small on a GPU; a small shape on the CPU."""
    import tempfile

    from harness.bench import speed

    with tempfile.TemporaryDirectory() as run_dir:
        modes = (False,) if eager_only else (False, True)
        typer.echo(speed(run_dir, steps=steps, compile_modes=modes, device=device).text())


@bench_app.command("overhead")
def bench_overhead(steps: BenchSteps = 40, repeats: BenchRepeats = 3):
    """Trainer step time / bare PyTorch loop step time (target <= 1.05 on CPU)."""
    _bench("overhead", steps, repeats)


@bench_app.command("tracking")
def bench_tracking(steps: BenchSteps = 40, repeats: BenchRepeats = 3):
    """Step time with MLflow tracking / without (target <= 1.02)."""
    _bench("tracking", steps, repeats)


@bench_app.command("pruning")
def bench_pruning(steps: Annotated[int, typer.Option(min=20, help="steps per trial")] = 120,
                  repeats: Annotated[int, typer.Option(min=1, help="kept at 1: one search per setting")] = 1):
    """Share of training steps the median pruner saves on a small tuning study (target >= 30%)."""
    _bench("pruning", steps, repeats)


@app.callback()
def _group() -> None:
    """ablate: does this block change actually help?"""


def main() -> None:
    # typer reports usage errors itself (exit 2); our own user errors arrive here
    try:
        app()
    except AblateError as err:
        typer.echo(f"ablate: error: {err}", err=True)
        sys.exit(2)
    except Interrupted:
        typer.echo("ablate: interrupted; the run in progress is checkpointed and marked KILLED in MLflow. "
                   "Run the same command again to resume it.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
