"""The `ablate` command line: it parses arguments and prints; the work is done by the Python
API (harness.Study and the packages below it).

User mistakes raise AblateError anywhere below; :func:`main` turns them into one message
on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from harness import __version__
from harness.cli.bench import bench_app
from harness.cli.evaluate import evaluate
from harness.cli.common import (Launcher, PluginOption, ProfileOption, ProfilesOption, ReportsDirOption, RunsDirOption,
                                SetOption, StorageOption, Stopped, StudyArgument, StudyFileArgument, TrackingOption,
                                PLAN_COLUMNS, interruptible, open_study, table)

# plain help: rich help shows every flag as "--dry-run <bool>" and reads "[...]" in help texts as markup
app = typer.Typer(help="Ablation studies of GPT blocks, tracked in MLflow.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)
app.add_typer(bench_app, name="bench")
app.command(name="eval")(evaluate)


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
    import pandas as pd

    listing = pd.DataFrame([(v.slot, v.name, v.defaults or "-", v.source, v.summary) for v in found],
                           columns=["slot", "name", "options (default)", "from", "what it is"])
    Console(width=200).print(table(listing, "registered variants"))


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

    study = open_study(run_file, set_, plugin, tracking_uri=tracking_uri, runs_dir=out)
    outcome, checkpoint = study.train_one(seed, fresh)
    metrics = outcome.headline()
    if not outcome.trained:
        typer.echo(f"already {outcome.state.value} in MLflow (experiment '{study.name}'); nothing was trained: {metrics}")
    elif outcome.state == RunState.FINISHED:
        typer.echo(f"finished after {study.runs[0].train.steps} steps: {metrics}")
    if study.runs[0].train.init_from:
        typer.echo(f"started from: {study.runs[0].train.init_from} ({study.runs[0].sources['init_from']})")
    typer.echo(f"checkpoint: {checkpoint}")
    outcome.check()


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
    from harness.training.starting_point import trained_model
    from harness.training.build import resolve_device

    model, tokenizer = trained_model(checkpoint, resolve_device(device))
    typer.echo(sample_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed))


# ---- studies -----------------------------------------------------------------------------------

@app.command()
@interruptible
def run(
    study_file: StudyFileArgument,
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
    from harness.study.executors import local_executor
    from harness.study.slurm import SlurmArray, SlurmSettings

    study = open_study(study_file, set_, plugin, profile, tracking_uri=tracking_uri, storage=storage, runs_dir=runs_dir,
                  reports_dir=reports_dir)
    if dry_run:
        plan = study.estimate()
        title = f"plan of study '{study.name}': {len(plan)} arms, {len(study.runs)} runs"
        Console().print(table(plan.rename(columns=PLAN_COLUMNS), title))
        typer.echo(study.estimate_summary(plan))
        return
    summary = study.run(executor=local_executor(jobs) if launcher == Launcher.local else SlurmArray(
        jobs, SlurmSettings(slurm_partition, slurm_time, slurm_gpus_per_job, slurm_cpus_per_job, slurm_signal_delay)))
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
    outcome = open_study(study_file, set_, plugin, profile, tracking_uri=tracking_uri, storage=storage,
                    runs_dir=runs_dir).work()
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
    open_study(study, tracking_uri=tracking_uri, reports_dir=reports_dir).report(plan)


@app.command()
@interruptible
def leaderboard(tracking_uri: TrackingOption = None, reports_dir: ReportsDirOption = Path("reports")):
    """Rank the variants of every study in the tracking store against their study's baseline:
    reports/leaderboard.md, .csv and a forest plot of the differences with their intervals."""
    from harness.report.leaderboard import build_leaderboard

    typer.echo(f"leaderboard: {build_leaderboard(tracking_uri, reports_dir)}")


@app.command()
@interruptible
def prepare(study_file: StudyFileArgument, profile: ProfilesOption = None, set_: SetOption = None,
            plugin: PluginOption = None):
    """Tokenize every corpus a study needs into the cache (for each --profile), before workers start."""
    for name in profile or ["-"]:  # the study as written, then each profile asked
        Console().print(table(open_study(study_file, set_, plugin, None if name == "-" else name).prepare(),
                              f"prepared for {study_file}" + f", profile {name}" * (name != "-")))


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
    state = open_study(study, set_, plugin, profile, tracking_uri=tracking_uri, storage=storage).status()
    console = Console()
    console.print(table(state.arms_in_some_state(), f"study '{state.name}'"))
    if len(state.running):
        console.print(table(state.running, "running"))
    typer.echo(state.summary())


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
    typer.echo("\n".join(open_study(study, tracking_uri=tracking_uri, runs_dir=runs_dir).clean(dry_run).lines()))


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless you mean to share")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on")] = 5000,
    tracking_uri: TrackingOption = None,
):
    """Start the MLflow UI on this machine's loopback address."""
    from harness.tracking.ui import serve_ui

    serve_ui(host, port, tracking_uri, typer.echo)


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
    except Stopped as stop:
        say(f"ablate: interrupted ({signal.Signals(stop.signum).name}); a run in progress is checkpointed and "
            "marked KILLED in MLflow. Run the same command again to resume it.")
        sys.exit(128 + stop.signum)
    except Exception as err:
        from harness.sqlite_store import user_error

        message = user_error(err)
        if message is None:
            raise
        say(f"ablate: error: {message}")
        sys.exit(2)
