"""The `ablate` command for the tests, started warm.

A cold `ablate` process spends about 6 s importing torch, MLflow, Optuna, scipy and matplotlib
before it reads its command line, and the suite starts a few hundred. So each pytest worker
keeps one server that has imported them once, and a command is a fork of it: a real process
with its own pid, working folder, environment, standard streams, signal handlers and exit
status, that runs `ablate`'s main and ends like a cold one (exit code, atexit, a traceback on
an uncaught exception, death by an unhandled signal). Nothing has run in the server but
imports, and it refuses to serve while it has a second Python thread, so a fork starts clean.

A command whose environment differs from the server's in what is read when a process starts or
imports (PYTHONPATH, HOME, OMP_NUM_THREADS, TRITON_INTERPRET, ...) replaces its fork with a cold
`ablate` (same pid), since those imports cannot be undone. The client's CPU affinity, resource
limits, umask and niceness (what `preexec_fn`, `taskset` and `nice` set) are the command's too.

Towards the test, a small client process stands in for the command, so subprocess.run and
Popen work unchanged: it hands the command its own standard streams, forwards the signals it
gets (SIGINT, SIGTERM, SLURM's SIGUSR1/2, SIGHUP), and ends with the command's status. When the
client is SIGKILLed, the command is SIGKILLed with it.

What `ablate` itself starts (local workers, torchrun, SLURM jobs) starts cold, as for users.
Tests that need the command's own pid or process group (to find its workers, or to signal the
group) start `ablate` cold: :data:`COLD`.

Usage: ``subprocess.run([*command(), "run", "study.yaml"], ...)``.
"""

import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

COLD = [sys.executable, "-m", "harness.cli"]
SOCKET_VARIABLE = "ABLATE_TEST_WARM_SOCKET"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# environment variables read when Python starts or a library is imported
READ_AT_START = ("PYTHON", "OMP_", "MKL_", "KMP_", "TRITON_", "TORCH", "MPL", "XDG_", "LC_", "HOME", "LANG")
# what `ablate run` imports besides the harness; of the harness, every module but the Triton
# kernels, which a run imports only when it uses them (and whose definitions Triton reports at exit)
PRELOAD = ("torch", "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "optuna", "sqlalchemy",
           "alembic", "scipy.stats", "pandas", "tabulate", "matplotlib.pyplot", "psycopg", "submitit", "tiktoken")
NOT_PRELOADED = ("harness.kernels.flash_attention", "harness.kernels.launch", "harness.kernels.rmsnorm",
                 "harness.kernels.swiglu", "harness.cli.__main__")

_server: subprocess.Popen | None = None


def command() -> list[str]:
    """The command line that runs `ablate` warm (this worker's server is started on first use);
    cold when the server could not start."""
    global _server
    if _server is None:
        folder = tempfile.mkdtemp(prefix="ablate-warm-")
        path = os.path.join(folder, "socket")
        _server = subprocess.Popen([sys.executable, "-c", f"from tests.warm import serve; serve({path!r})"],
                                   cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
        if _server.stdout.readline().strip() == "ready":
            os.environ[SOCKET_VARIABLE] = path
    if SOCKET_VARIABLE not in os.environ:
        return COLD
    return [sys.executable, __file__]


# -- the client: stdlib only, so it starts in milliseconds ----------------------------------------

def _client(args: list[str]) -> None:
    connection = socket.socket(socket.AF_UNIX)
    try:
        connection.connect(os.environ[SOCKET_VARIABLE])
    except (KeyError, OSError):
        os.execv(sys.executable, [*COLD, *args])
    import resource

    mask = os.umask(0)
    os.umask(mask)
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "umask": mask, "limits": limits,
                          "affinity": sorted(os.sched_getaffinity(0)),
                          "niceness": os.getpriority(os.PRIO_PROCESS, 0)}).encode()
    socket.send_fds(connection, [struct.pack("!Q", len(request))], [0, 1, 2])
    connection.sendall(request)
    replies = connection.makefile("r")
    pid = int(replies.readline())
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: os.kill(pid, signum))
    status = int(replies.readline())
    if status >= 0:
        os._exit(status)
    signal.signal(-status, signal.SIG_DFL)  # killed by a signal: so is the stand-in
    os.kill(os.getpid(), -status)


# -- the server ------------------------------------------------------------------------------------

def serve(path: str) -> None:
    """Import what commands need, then fork a command for each client until this worker ends."""
    import importlib
    import pkgutil

    import harness

    # no collection here and none of these objects in a fork's: a collection in a fork would write
    # to every page it shares with the server (Python's advice for forking servers, see gc.freeze)
    gc.disable()
    harness_modules = [module.name for module in pkgutil.walk_packages(harness.__path__, "harness.")
                       if module.name not in NOT_PRELOADED]
    # a module that cannot be imported here cannot in a cold process either: the command says so
    for name in [*PRELOAD, *harness_modules]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # a Python thread would be missing from every fork (the native pools of OpenBLAS and torch
    # are rebuilt in a child after a fork)
    if threading.active_count() != 1:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the monitors below are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1)
    gc.freeze()
    print("ready", flush=True)
    worker = os.getppid()
    while os.getppid() == worker:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _monitor(connection)  # returns only in the command's process
            return
        connection.close()


def _monitor(connection: socket.socket) -> None:
    """Fork the command a client asked for, tell the client its pid and then its exit status;
    kill it if the client dies first. Returns only in the command's process."""
    connection.setblocking(True)
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    size = struct.unpack("!Q", header)[0]
    request = b""
    while len(request) < size:
        request += connection.recv(size - len(request))
    request = json.loads(request)
    pid = os.fork()
    if pid == 0:
        connection.close()
        _become(request, fds)
        from harness.cli import main

        main()
        sys.exit(0)  # leaves through the server's frames, like a cold process leaves its main
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    exited = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([connection, exited], [], [])
        if exited in ready:
            break
        if not connection.recv(1):  # the client died (SIGKILL): the command dies too
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    try:
        connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def _become(request: dict, fds: list[int]) -> None:
    """Turn this fork of the server into the process a cold start of the command would be (or
    into a cold start, where the environment would have changed what the server imported)."""
    import resource

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    gc.enable()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    for name, limits in request["limits"].items():
        resource.setrlimit(getattr(resource, name), limits)
    os.sched_setaffinity(0, request["affinity"])
    os.setpriority(os.PRIO_PROCESS, 0, request["niceness"])
    started = {name: value for name, value in os.environ.items() if name.startswith(READ_AT_START)}
    os.environ.clear()
    os.environ.update(request["env"])
    if started != {name: value for name, value in os.environ.items() if name.startswith(READ_AT_START)}:
        os.execv(sys.executable, [*COLD, *request["argv"]])
    sys.argv = ["ablate", *request["argv"]]
    for signum in (*FORWARDED, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts


if __name__ == "__main__":
    _client(sys.argv[1:])
