"""Rich progress bars: one for the study, one for the run in flight (loss, tokens/s, ETA)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.notices import make_console
from harness.training.observer import Observer


def make_progress(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console or make_console(), transient=False,
    )


class RunProgress(Observer):
    """An observer that moves a progress bar with the run's steps and shows its latest metrics.

    It keeps its own label: a task id is rich's key for the task, not its position in
    `Progress.tasks` once earlier runs' bars are removed."""

    def __init__(self, progress: Progress, label: str, total_steps: int):
        self.progress = progress
        self.label = label
        self.flags: list[str] = []  # notices said, shown after the label
        self.task = progress.add_task(escape(label), total=total_steps, status="starting")
        self.latest: dict[str, float] = {}

    def on_start(self, info: dict) -> None:
        device = info["execution"]["device"]
        self.progress.update(self.task, status=f"{info['params_non_embedding']:,} params on {device}")

    def on_metrics(self, step: int, metrics: dict) -> None:
        self.latest.update(metrics)
        parts = [f"loss {self.latest['train_loss']:.3f}" if "train_loss" in self.latest else ""]
        if "val_loss" in self.latest:
            parts.append(f"val {self.latest['val_loss']:.3f}")
        if "tokens_per_s" in self.latest:
            parts.append(f"{self.latest['tokens_per_s']:,.0f} tok/s")
        self.progress.update(self.task, completed=step, status="  ".join(p for p in parts if p))

    def on_notice(self, name: str, message: str) -> None:
        self.progress.console.print(f"[yellow]{escape(self.label)}: {escape(message)}[/]", highlight=False)
        self.flags.append(name)
        self.progress.update(self.task, description=escape(" ".join([self.label, *(f"[{f}]" for f in self.flags)])))

    def close(self) -> None:
        self.progress.remove_task(self.task)
