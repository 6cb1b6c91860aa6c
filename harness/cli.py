"""The `ablate` command line: it parses arguments and prints; the work is done by the Python
API (harness.Study and the packages below it).

User mistakes raise AblateError anywhere below; :func:`main` turns them into one message
on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum
import functools
import json
import numbers
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import __version__
from harness.errors import AblateError
from harness.redaction import redact

# plain help: rich help shows every flag as "--dry-run <bool>" and reads "[...]" in help texts as markup
app = typer.Typer(help="Ablation studies of GPT blocks, tracked in MLflow.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)

PluginOption = Annotated[Optional[list[str]], typer.Option(
    "--plugin", metavar="MODULE|FILE", help="module name or .py file registering variants (repeatable)")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="PATH=VALUE", help="override a study field: path.to.field=value, read as YAML (repeatable)")]
ProfileOption = Annotated[Optional[str], typer.Option(metavar="NAME", help="apply a named profile of the study (e.g. gpu)")]
TrackingOption = Annotated[Optional[str], typer.Option(
    "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default)")]
StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", envvar="ABLATE_STORAGE", show_envvar=False, metavar="URL",
    help="Optuna storage of the study ledger (default: $ABLATE_STORAGE, else sqlite:///optuna.db; "
         "postgresql://... for many machines)")]
RunsDirOption = Annotated[Path, typer.Option(metavar="DIR", help="folder for checkpoints (share it between workers to resume)")]
ReportsDirOption = Annotated[Path, typer.Option(metavar="DIR", help="folder for reports")]
StudyArgument = Annotated[str, typer.Argument(metavar="STUDY", help="study name (the MLflow experiment) or study file")]


class Stopped(Exception):
    """A stop request (Ctrl-C, SIGTERM) in a long command; carried past typer, which would turn
    it into a bare 'Aborted!'."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def interruptible(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from harness.errors import causes

        try:
            return command(*args, **kwargs)
        except BaseException as err:
            # a stop request, also one that a library tripped over while handling it (Optuna
            # failing to record a trial it was telling when the signal came)
            stop = next((seen for seen in causes(err) if isinstance(seen, KeyboardInterrupt)), None)
            if stop is None:
                raise
            raise Stopped(getattr(stop, "signum", signal.SIGINT)) from None

    return wrapper


def _console() -> Console:
    from harness.notices import make_console

    return make_console()


def _study_name(study: str) -> str:
    """A study given by name, or by its file."""
    if study.endswith((".yaml", ".yml")):
        from harness.config.study import load_study

        return load_study(study).name
    return study


def _load(study_file: Path, set_, plugin, profile, tracking_uri=None, storage=None, runs_dir=Path("runs"),
          reports_dir=Path("reports")):
    from harness import Study

    return Study.load(study_file, set_, profile, plugin, tracking_uri=tracking_uri, storage=storage,
                      runs_dir=runs_dir, reports_dir=reports_dir, console=_console())


def _table(frame, title: str) -> Table:
    from pandas.api.types import is_numeric_dtype

    table = Table(title=escape(title))
    for column in frame.columns:
        # fold, never cut: at 80 columns a name or a header must still be read whole
        table.add_column(escape(str(column)), justify="right" if is_numeric_dtype(frame[column]) else "left",
                         overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    return table


def _cell(value) -> str:
    import pandas as pd

    if pd.isna(value):
        return "–"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:,.1f}"
    return escape(str(value))  # arm and variant names are the user's: never rich markup


# ---- variants and schema ---------------------------------------------------------------------

@app.command()
def variants(
    as_json: Annotated[bool, typer.Option("--json", help="print {slot: [names...]}")] = False,
    plugin: PluginOption = None,
):
    """List every registered variant: slot, name, options with defaults, and origin."""
    from harness import registry

    for reference in plugin or []:
        registry.load_plugin(reference)
    found = registry.variants()
    if as_json:
        typer.echo(json.dumps({slot: [v.name for v in found if v.slot == slot] for slot in registry.SLOTS}, indent=2))
        return
    table = Table(title="registered variants")
    for column in ("slot", "name", "options (default)", "from", "what it is"):
        table.add_column(column, overflow="fold")
    for variant in found:
        options = ", ".join(f"{name}={'required' if field.is_required() else field.default}"
                            for name, field in variant.options.model_fields.items())
        table.add_row(*map(escape, (variant.slot, variant.name, options or "-", variant.source, variant.summary)))
    Console(width=200).print(table)


@app.command()
def schema(plugin: PluginOption = None):
    """Print the JSON Schema of a study file (for completion and checks in editors)."""
    from harness import registry
    from harness.config.study import study_json_schema

    for reference in plugin or []:
        registry.load_plugin(reference)
    typer.echo(json.dumps(study_json_schema(), indent=2))


# ---- single runs -------------------------------------------------------------------------------

@app.command()
@interruptible
def train(
    run_file: Annotated[Path, typer.Argument(help="a study file with one arm")],
    set_: SetOption = None,
    plugin: PluginOption = None,
    seed: Annotated[Optional[int], typer.Option(help="seed (default: the study's first)")] = None,
    out: Annotated[Path, typer.Option(help="folder for the run's checkpoint")] = Path("runs"),
    fresh: Annotated[bool, typer.Option(help="start over instead of resuming from a checkpoint")] = False,
    tracking_uri: TrackingOption = None,
):
    """Train a single run, tracked in MLflow like a one-arm study, and save its checkpoint."""
    from harness.config.run_state import RunState

    study = _load(run_file, set_, plugin, None, tracking_uri, runs_dir=out)
    outcome, checkpoint = study.train_one(seed, fresh)
    metrics = ", ".join(f"{k}={outcome.metrics[k]:.4g}" for k in ("train_loss", "val_loss", "val_exact_match",
                                                                   "avg_tokens_per_s") if k in outcome.metrics)
    if not outcome.trained:
        typer.echo(f"already {outcome.state.value} in MLflow (experiment '{study.name}'); nothing was trained: {metrics}")
    elif outcome.state == RunState.FINISHED:
        typer.echo(f"finished after {study.runs[0].train.steps} steps: {metrics}")
    if study.runs[0].train.init_from:
        typer.echo(f"started from: {study.runs[0].train.init_from} ({study.runs[0].sources['init_from']})")
    typer.echo(f"checkpoint: {checkpoint}")
    if outcome.state == RunState.DIVERGED:
        raise AblateError(f"the run diverged: {outcome.reason}; its curve up to then is kept. Lower train.lr or add warmup")
    if outcome.state == RunState.FAILED:
        raise AblateError(f"the run failed: {outcome.reason}")


@app.command()
def generate(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint written by ablate train/run, or hf:<model id or "
                                                   "folder> (a Hugging Face GPT-2 or Llama model)")],
    prompt: Annotated[str, typer.Option(help="text to continue", show_default="a newline")] = "\n",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="tokens to sample")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="softmax temperature; 0 = greedy")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="sample among the k likeliest tokens")] = 50,
    seed: Annotated[int, typer.Option(help="seed of the sampler")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps")] = "auto",
):
    """Sample text from a checkpoint or a Hugging Face model."""
    from harness.model.generate import sample_text
    from harness.model.hf_source import PREFIX, model_from_hf
    from harness.training.checkpoint import model_from_checkpoint
    from harness.training.trainer import resolve_device

    if checkpoint.startswith(PREFIX):
        model, tokenizer = model_from_hf(checkpoint.removeprefix(PREFIX))
        model = model.to(resolve_device(device))
    else:
        model, tokenizer = model_from_checkpoint(checkpoint, resolve_device(device))
    typer.echo(sample_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed))


# ---- studies -----------------------------------------------------------------------------------

class Launcher(str, enum.Enum):
    local = "local"
    slurm = "slurm"


PLAN_COLUMNS = {"params_non_embedding": "params (non-emb.)", "flops_per_token": "FLOPs/token",
                "tokens_per_run": "tokens/run", "seconds_per_run": "est. time/run (s)"}


@app.command()
@interruptible
def run(
    study_file: Annotated[Path, typer.Argument(metavar="STUDY_FILE", help="a study YAML file")],
    set_: SetOption = None,
    plugin: PluginOption = None,
    profile: ProfileOption = None,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    jobs: Annotated[int, typer.Option(min=0, metavar="N", help="workers (local: one per GPU when there are GPUs); "
                                                  "0 only plans the study for `ablate worker`s")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and train nothing")] = False,
    runs_dir: RunsDirOption = Path("runs"),
    reports_dir: ReportsDirOption = Path("reports"),
    launcher: Annotated[Launcher, typer.Option(help="where --jobs workers run: local processes, or a SLURM job "
                                                    "array (submitted through submitit)")] = Launcher.local,
    slurm_partition: Annotated[Optional[str], typer.Option(help="SLURM partition (default: the cluster's)")] = None,
    slurm_time: Annotated[str, typer.Option(help="time limit per SLURM worker, e.g. 4:00:00")] = "4:00:00",
    slurm_gpus_per_job: Annotated[int, typer.Option(min=0, help="GPUs per SLURM worker")] = 0,
    slurm_cpus_per_job: Annotated[Optional[int], typer.Option(
        min=1, help="CPU cores per SLURM worker (default: this machine's cores / --jobs)")] = None,
    slurm_signal_delay: Annotated[int, typer.Option(
        min=1, help="seconds before the time limit at which a SLURM worker checkpoints and stops")] = 120,
):
    """Train every arm x seed of a study, track it in MLflow, and write its report."""
    from harness.study.slurm import SlurmSettings

    study = _load(study_file, set_, plugin, profile, tracking_uri, storage, runs_dir, reports_dir)
    if dry_run:
        plan = study.estimate()
        title = f"plan of study '{study.name}': {len(plan)} arms, {len(study.runs)} runs"
        Console().print(_table(plan.rename(columns=PLAN_COLUMNS), title))
        left = plan["runs"] - plan["finished"]
        minutes = (plan["seconds_per_run"] * left).sum() / 60
        typer.echo(f"{len(study.runs)} runs, {plan['finished'].sum()} finished already; the other {left.sum()} "
                   f"estimated at {minutes:.1f} min of training on {study.device}")
        if study.spec.sequential:
            typer.echo(f"seeds are added one at a time while a verdict is unsettled: up to "
                       f"{study.spec.sequential.max} per arm, {len(study.possible_runs())} runs at most")
        return
    slurm = SlurmSettings(slurm_partition, slurm_time, slurm_gpus_per_job, slurm_cpus_per_job, slurm_signal_delay) \
        if launcher == Launcher.slurm else None
    if slurm:
        slurm.minutes()  # a malformed time fails before anything is planned
    summary = study.run(jobs, slurm)
    if summary is not None:
        for row in summary[summary["arm"] != summary["baseline"]].itertuples():
            typer.echo(f"{row.arm} vs {row.baseline}: {row.verdict}")


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
    from harness.study.launch import follow_parent

    follow_parent()
    outcome = _load(study_file, set_, plugin, profile, tracking_uri, storage, runs_dir).work()
    typer.echo(f"worker done: {outcome.trained} runs trained, {outcome.done_already} found finished in MLflow")


@app.command()
@interruptible
def report(
    study: StudyArgument,
    plan: Annotated[Optional[str], typer.Option(help="the parent run id of an earlier execution to report "
                                                     "(default: the newest)")] = None,
    tracking_uri: TrackingOption = None,
    reports_dir: ReportsDirOption = Path("reports"),
):
    """Rebuild a study's report from what MLflow holds: the runs of one execution's plan."""
    from harness.report import build_report
    from harness.tracking.tracker import Tracker

    result = build_report(Tracker(tracking_uri), _study_name(study), reports_dir, plan)
    typer.echo(f"report: {result.folder / 'report.md'}")


@app.command()
@interruptible
def leaderboard(tracking_uri: TrackingOption = None, reports_dir: ReportsDirOption = Path("reports")):
    """Rank the variants of every study in the tracking store against their study's baseline:
    reports/leaderboard.md, .csv and a forest plot of the differences with their intervals."""
    from harness.report.leaderboard import build_leaderboard
    from harness.tracking.tracker import Tracker

    typer.echo(f"leaderboard: {build_leaderboard(Tracker(tracking_uri), reports_dir)}")


@app.command()
@interruptible
def status(
    study: StudyArgument,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    set_: SetOption = None,
    plugin: PluginOption = None,
    profile: ProfileOption = None,
):
    """Where a study stands: per arm finished, running, queued, failed and diverged runs, the
    runs in flight (worker, step, last heartbeat), and an ETA from the finished runs' wall times.
    Given the study file (with the same --set/--profile as `ablate run`), runs not yet planned count too."""
    from harness.study.ledger import DEFAULT_STORAGE, Ledger
    from harness.study.status import study_status
    from harness.tracking.tracker import Tracker

    if study.endswith((".yaml", ".yml")):
        state = _load(Path(study), set_, plugin, profile, tracking_uri, storage).status()
    else:
        state = study_status(study, Tracker(tracking_uri), Ledger(storage or DEFAULT_STORAGE, study))
    console = Console()
    # a state no run is in says nothing, and its column would squeeze the others at 80 columns
    arms = state.arms[[column for column in state.arms if column in ("arm", "finished") or
                       state.arms[column].fillna(0).ne(0).any()]]
    console.print(_table(arms, f"study '{state.name}'"))
    running = state.running[["arm", "seed", "worker", "step", "steps", "heartbeat_age_s"]].astype(
        {"step": "Int64", "steps": "Int64"})
    if len(running):
        console.print(_table(running.rename(columns={"heartbeat_age_s": "last heartbeat (s ago)"}), "running"))
    missing = (state.runs["state"] == "missing").sum()
    if missing:
        typer.echo(f"{missing} runs the ledger lists as finished are missing from the tracking store; the next "
                   "`ablate run` trains them again")
    eta = "unknown until a run has finished" if state.eta_seconds is None else f"{state.eta_seconds / 60:.1f} min"
    typer.echo(f"{(state.runs['state'] == 'finished').sum()} of {len(state.runs)} runs finished; ETA {eta}")


@app.command()
@interruptible
def clean(
    study: StudyArgument,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted, delete nothing")] = False,
    tracking_uri: TrackingOption = None,
    runs_dir: RunsDirOption = Path("runs"),
):
    """Delete the checkpoints and locks of a study's settled runs (finished, diverged, pruned).
    Interrupted and failed runs keep theirs, to resume; so does a run with records not yet sent."""
    from harness.study.clean import clean_runs
    from harness.tracking.tracker import Tracker

    result = clean_runs(_study_name(study), Tracker(tracking_uri), runs_dir, dry_run)
    verb = "would delete" if dry_run else "deleted"
    for path in result.removed:
        typer.echo(f"{verb} {path}")
    for folder in result.kept_unsent:
        typer.echo(f"kept {folder}: it holds tracking records MLflow has not taken yet (sent by the next `ablate run`)")
    typer.echo(f"{verb} {len(result.removed)} files, {result.bytes / 2**20:.1f} MiB")


# MLflow's UI opens experiments in its GenAI view unless asked for the model-training one
UI_VIEW = "workflowType=machine_learning"


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless you mean to share")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on")] = 5000,
    tracking_uri: TrackingOption = None,
):
    """Start the MLflow UI on this machine's loopback address."""
    from harness.tracking.tracker import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    with socket.socket() as probe:  # a busy port would leave the printed link serving another store
        try:
            probe.bind((host, port))
        except OSError as err:
            raise AblateError(f"cannot serve on {host}:{port} ({err.strerror}): another server may be there, and "
                              "the link would show its store, not this one; pick another --port") from None
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI on http://{host}:{port}/#/experiments?{UI_VIEW} (store {redact(uri)}); Ctrl-C stops it")
    # the store goes by environment, not argv, where any user of the machine could read a password
    os.execvpe(command[0], command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


# ---- benchmarks --------------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmarks measured in one process; with no subcommand, `speed`.",
                        invoke_without_command=True, rich_markup_mode=None)
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


@bench_app.command("sequential")
def bench_sequential(
    studies: Annotated[int, typer.Option(min=100, help="simulated studies per scenario")] = 2000,
    min_seeds: Annotated[int, typer.Option("--min", min=2, help="seeds every arm trains first")] = 3,
    max_seeds: Annotated[int, typer.Option("--max", min=2, help="most seeds per arm")] = 10,
    arms: Annotated[int, typer.Option(min=1, help="arms facing the baseline")] = 2,
    effect: Annotated[float, typer.Option(help="true difference, in standard deviations of a seed's paired "
                                               "difference")] = 1.5,
):
    """The sequential seed rule on simulated studies (no training): family-wise error at no
    effect (target <= 5%), power at an effect, and seeds used against a fixed max."""
    from harness.bench import sequential

    if min_seeds > max_seeds:
        raise AblateError(f"--min ({min_seeds}) must not exceed --max ({max_seeds})")
    typer.echo(sequential(studies, min_seeds, max_seeds, arms, effect))


@bench_app.command("workers")
def bench_workers(steps: Annotated[int, typer.Option(min=1, help="training steps per run")] = 100,
                  max_jobs: Annotated[Optional[int], typer.Option(min=1, help="most workers (default: the cores)")] = None,
                  seeds: Annotated[int, typer.Option(min=1, help="seeds of each of the 2 arms")] = 3):
    """One small study with --jobs 1, 2, ... up to the cores: runs per hour and the ratio to
    --jobs 1 (target on 2 cores: --jobs 2 not slower)."""
    from harness.bench import workers

    typer.echo(workers(steps, max_jobs, seeds))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                 help="print the version and exit")] = False) -> None:
    """ablate: does this block change actually help?"""


def main() -> None:
    from harness.notices import say
    from harness.training import interrupt

    interrupt.install()  # SIGTERM (kill, timeout, scancel, a container stop) is Ctrl-C
    # typer reports usage errors itself (exit 2); our own user errors arrive here
    try:
        app()
    except AblateError as err:
        say(f"ablate: error: {err}")
        sys.exit(2)
    except Stopped as stop:
        say(f"ablate: interrupted ({signal.Signals(stop.signum).name}); a run in progress is checkpointed and "
            "marked KILLED in MLflow. Run the same command again to resume it.")
        sys.exit(128 + stop.signum)
    except Exception as err:  # a local file fault on any path ablate writes is the user's to fix, in one line
        from harness.errors import file_fault
        from harness.sqlite_store import sqlite_file_fault

        fault = file_fault(err) or sqlite_file_fault(err)
        if fault is None:
            raise
        say(f"ablate: error: {fault}")
        sys.exit(2)


if __name__ == "__main__":
    main()
