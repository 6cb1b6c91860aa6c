import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import torch


def _pin_xdist_worker() -> None:
    """Under `pytest -n N`, each worker runs on its share of the cores, and so does everything it
    starts: N processes that each take a thread per core would fight over them. With more workers
    than cores, workers take turns on one core instead."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker.removeprefix("gw"))
    share = ([core for position, core in enumerate(cores) if position % count == index] if count <= len(cores)
             else [cores[index % len(cores)]])
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))


_pin_xdist_worker()

if not torch.cuda.is_available():
    # our Triton kernels run on the CPU through Triton's interpreter (read when they are defined)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness.config.model import ModelConfig
from harness.model.gpt import GPT
from tests.faults import FAULTS


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough to build hundreds of times in a test run."""
    settings = dict(vocab_size=32, context_length=16, n_layer=2, n_head=4, d_model=32)
    settings.update(overrides)
    return ModelConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tokenizers and token arrays go to a cache of the test session's own."""
    os.environ["ABLATE_CACHE_DIR"] = str(tmp_path_factory.mktemp("ablate-cache"))
    yield


@pytest.fixture
def databases():
    """Two fresh PostgreSQL databases: (Optuna ledger URL, MLflow store URL)."""
    admin_url = os.environ.get("ABLATE_TEST_POSTGRES")
    if not admin_url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL in $ABLATE_TEST_POSTGRES (.ci/run starts it)")
        pytest.skip("no PostgreSQL: set $ABLATE_TEST_POSTGRES to run the distributed-study tests")
    import psycopg

    names = [f"ablate_test_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for name in names:
            connection.execute(f"CREATE DATABASE {name}")
    base = admin_url.rsplit("/", 1)[0]
    yield tuple(f"{base}/{name}" for name in names)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for name in names:
            _drop_database(connection, name)


def _drop_database(connection, name: str, tries: int = 10) -> None:
    """Drop `name`, ending its sessions; an autovacuum worker on it may be ended only with
    pg_signal_backend (.ci/run grants it), so without that role the drop waits for the worker."""
    import psycopg

    for attempt in range(tries):
        try:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == tries - 1:
                raise
            time.sleep(1.0)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ledger_study(storage: str, study: str):
    """The Optuna study of the newest plan of `study` in the ledger `storage`."""
    import optuna

    from harness.study.ledger import ledger_names, open_storage

    opened = open_storage(storage)
    names = ledger_names(opened, study)
    assert names, f"no plan of study '{study}' in {storage}"
    return optuna.load_study(study_name=names[-1], storage=opened)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`pytest -n auto`: two workers a core (`_pin_xdist_worker` puts two on each). Many tests
    spend much of their time waiting (for a tracking server, a SLURM job, a signal, a worker's
    heartbeat); a second worker keeps the core busy meanwhile."""
    return 2 * len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2 * (os.cpu_count() or 1)


def pytest_collection_modifyitems(config, items):
    """The heaviest test files first, each file's tests in their order: with `--dist loadfile
    --no-loadscope-reorder` (the Makefile) the long files start early and short ones fill the
    end, so no worker finishes minutes after the others. tests/file_seconds.json holds the
    seconds each file took on one core (files under 3 s are left out); a stale entry only
    changes the order."""
    seconds = json.loads((Path(__file__).parent / "file_seconds.json").read_text())
    files = [item.nodeid.split("::", 1)[0] for item in items]
    position = {name: index for index, name in enumerate(dict.fromkeys(files))}
    order = {id(item): (-seconds.get(name, 0), position[name]) for item, name in zip(items, files)}
    items.sort(key=lambda item: order[id(item)])


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a worker of `pytest -n`: its counts go to the controller
        session.config.workeroutput["faults"] = dict(FAULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for name, count in getattr(node, "workeroutput", {}).get("faults", {}).items():
        FAULTS[name] += count


def pytest_terminal_summary(terminalreporter):
    if any(FAULTS.values()):
        terminalreporter.write_line("fault tests: " + ", ".join(f"{name}: {value}" for name, value in FAULTS.items()))
