"""Progress of long corpus work (reading, training a BPE, tokenizing) on stderr: on a terminal a
bar with MB done, MB/s and the time left; in a log, one line when the work is done. Short work
(under PROGRESS_BYTES) says nothing; a bar that fails says so once and the work goes on
(harness.notices)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from harness.notices import make_console, say, warn

PROGRESS_BYTES = 1 << 25  # 32 MB: smaller corpora are prepared in a few seconds


@contextlib.contextmanager
def preparing(description: str, total_bytes: int) -> Iterator[Callable[[int], None] | None]:
    """A function to call with each number of bytes done, or None when nothing is shown."""
    if total_bytes < PROGRESS_BYTES:
        yield None
        return
    console = make_console()
    if not console.is_terminal:
        done, start = [0], time.perf_counter()
        yield lambda count: done.__setitem__(0, done[0] + count)
        seconds = time.perf_counter() - start
        if done[0]:  # nothing read: the work was in the cache
            say(f"{description}: {done[0] / 1e6:,.0f} MB in {seconds:.1f} s "
                f"({done[0] / 1e6 / max(seconds, 1e-9):,.1f} MB/s)")
        return
    try:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)
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
