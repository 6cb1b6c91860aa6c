"""A progress bar for long corpus work (reading, training a BPE, tokenizing): MB done, MB/s and
the time left, on stderr. Short work (under PROGRESS_BYTES) shows none; a bar that fails says so
once and the work goes on (harness.notices)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from harness.notices import make_console, warn

PROGRESS_BYTES = 1 << 25  # 32 MB: smaller corpora are prepared in a few seconds


@contextlib.contextmanager
def preparing(description: str, total_bytes: int) -> Iterator[Callable[[int], None] | None]:
    """A function to call with each number of bytes done, or None when no bar is shown."""
    if total_bytes < PROGRESS_BYTES:
        yield None
        return
    try:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), console=make_console(), transient=True)
        task = bar.add_task(description, total=total_bytes)
        bar.start()
    except Exception as err:  # a progress bar never stops the work
        warn(f"no progress bar for {description}: {err}")
        yield None
        return
    failed = []

    def advance(count: int) -> None:
        if not failed:
            try:
                bar.advance(task, count)
            except Exception as err:
                failed.append(err)
                warn(f"the progress bar of {description} stopped: {err}")

    try:
        yield advance
    finally:
        with contextlib.suppress(Exception):
            bar.stop()
