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


def allow_open_files(count: int) -> bool:
    """Raise this process's soft limit of open files (RLIMIT_NOFILE) towards its hard limit so
    that `count` more files may stay open (each memory-mapped token shard holds one); False when
    even the hard limit is too low. Linux's common soft default of 1024 would stop a corpus of
    a thousand shards, as it does any program that maps them (nanoGPT's loaders reopen instead)."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return True
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + 256  # what the process holds besides: libraries, stores, sockets
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return True
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed
