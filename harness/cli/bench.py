"""`ablate bench`: the benchmarks, each measured in one process and printed as ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import (ReportsDirOption, RunsDirOption, StorageOption, StudyArgument, TrackingOption,
                                interruptible, open_study)
from harness.errors import AblateError

bench_app = typer.Typer(help="Benchmarks measured in one process; with no subcommand, `speed`.",
                        invoke_without_command=True, rich_markup_mode=None)

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


@bench_app.command("data")
def bench_data(sizes: Annotated[str, typer.Option(help="corpus sizes in MB, comma-separated")] = "50,200,1000",
               folder: Annotated[Optional[Path], typer.Option(
                   help="where to write the corpora and caches (default: a temporary folder; the largest "
                        "size needs about 3.5x its size on disk)")] = None,
               repeats: Annotated[int, typer.Option(min=1, help="fresh processes timing the warm first step; "
                                                             "the fastest is reported")] = 3):
    """Preparing text corpora of three sizes: MB/s against the tokenizer library's own batch
    encode, peak RSS and its growth, warm-cache time to the first step; a batch against a step."""
    import tempfile

    from harness.bench.data import data_bench

    try:
        sizes_mb = [float(size) for size in sizes.split(",")]
    except ValueError:
        sizes_mb = []
    if not sizes_mb or not all(0.01 <= size <= 100_000 for size in sizes_mb):  # NaN fails both
        raise AblateError(f"--sizes '{sizes}': expected sizes from 0.01 to 100000 MB, separated by commas, "
                          "e.g. 50,200,1000")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        typer.echo(data_bench(folder, sizes_mb, repeats).text())
        return
    with tempfile.TemporaryDirectory() as scratch:
        typer.echo(data_bench(Path(scratch), sizes_mb, repeats).text())


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


@bench_app.command("forecast")
@interruptible
def bench_forecast(study: StudyArgument = "studies/ladder.yaml", tracking_uri: TrackingOption = None,
                   storage: StorageOption = None, runs_dir: RunsDirOption = Path("runs"),
                   reports_dir: ReportsDirOption = Path("reports")):
    """A ladder study's forecasts checked on held-out scales: coverage of the 95% intervals,
    decision accuracy against the naive rules, Brier score (targets >= 90%, >= naive, <= 0.15).
    A study file is trained first where runs are missing (as `ablate run` would);
    reports/<study>/forecast_check.md."""
    from harness.bench.forecast import forecast_check

    handle = open_study(study, tracking_uri=tracking_uri, storage=storage, runs_dir=runs_dir, reports_dir=reports_dir)
    if Path(study).suffix in (".yaml", ".yml"):
        handle.run()
    typer.echo(forecast_check(handle.tracker, handle.name, reports_dir))
