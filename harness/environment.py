"""What this process runs in: environment variables set for a while, waits its environment
sets, the cores it may use, and whether another process is still alive."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """Set `variables` in os.environ, and restore what was there (or wasn't) afterwards."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def seconds_from(variable: str, default: float) -> float:
    """A wait in seconds from $`variable`, or `default`; read when asked, not at import, so each
    command of a process that has imported the harness sees its own environment."""
    return float(os.environ.get(variable, default))


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask where the OS has one (taskset, a SLURM
    or container cpuset), not every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
