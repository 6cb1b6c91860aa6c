"""What the `ablate` commands share: their options, how a stop request leaves a command, and
how a table is printed."""

from __future__ import annotations

import enum
import functools
import numbers
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

PluginOption = Annotated[Optional[list[str]], typer.Option(
    "--plugin", metavar="MODULE|FILE", help="module name or .py file registering variants (repeatable)")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="PATH=VALUE", help="override a study field: path.to.field=value, read as YAML (repeatable)")]
ProfileOption = Annotated[Optional[str], typer.Option(metavar="NAME", help="apply a named profile of the study (e.g. gpu)")]
ProfilesOption = Annotated[Optional[list[str]], typer.Option(
    "--profile", metavar="NAME", help="a named profile of the study (repeatable; '-' is the study as written)")]
TrackingOption = Annotated[Optional[str], typer.Option(
    "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default)")]
StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", envvar="ABLATE_STORAGE", show_envvar=False, metavar="URL",
    help="Optuna storage of the study ledger (default: $ABLATE_STORAGE, else sqlite:///optuna.db; "
         "postgresql://... for many machines)")]
RunsDirOption = Annotated[Path, typer.Option(metavar="DIR", help="folder for checkpoints (share it between workers to resume)")]
ReportsDirOption = Annotated[Path, typer.Option(metavar="DIR", help="folder for reports")]


class Launcher(str, enum.Enum):
    """Where `ablate run --jobs N` starts its workers."""
    local = "local"
    slurm = "slurm"


StudyArgument = Annotated[str, typer.Argument(metavar="STUDY", help="study name (the MLflow experiment) or study file")]
# the columns of `ablate run --dry-run` (harness.study.plan.estimate), as printed
PLAN_COLUMNS = {"params_non_embedding": "params (non-emb.)", "flops_per_token": "FLOPs/token",
                "tokens_per_run": "tokens/run", "data_epochs": "epochs", "tokens_per_param": "tokens/param",
                "seconds_per_run": "est. time/run (s)", "time_from": "time from"}
StudyFileArgument = Annotated[Path, typer.Argument(metavar="STUDY_FILE", help="a study YAML file")]


class Stopped(Exception):
    """A stop request (Ctrl-C, SIGTERM) in a long command; carried past typer, which would turn
    it into a bare 'Aborted!'."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def open_study(study: str | Path, set_=None, plugin=None, profile=None, **stores):
    """The study handle (harness.Study) by file or name, printing to stderr."""
    from harness import Study
    from harness.notices import make_console

    return Study.open(study, set_, profile, plugin, console=make_console(), **stores)


def interruptible(command):
    """A command that a stop request leaves as Stopped (exit 128 + the signal), not as a traceback."""
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


def table(frame, title: str) -> Table:
    """A DataFrame as a rich table: numbers right-aligned with thousands separators, NaN as –."""
    from pandas.api.types import is_numeric_dtype

    shown = Table(title=escape(title))
    for column in frame.columns:
        # fold, never cut: at 80 columns a name or a header must still be read whole
        shown.add_column(escape(str(column)), justify="right" if is_numeric_dtype(frame[column]) else "left",
                         overflow="fold")
    for row in frame.itertuples(index=False):
        shown.add_row(*(cell(value) for value in row))
    return shown


def cell(value) -> str:
    import pandas as pd

    if pd.isna(value):
        return "–"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:,.1f}"
    return escape(str(value))  # arm and variant names are the user's: never rich markup
