"""What one run has to tell MLflow, kept until MLflow has it.

A run's params, metrics, tags, texts and final status are queued here in order and sent by
one background thread, so the training loop never waits on the tracking store. When the
store cannot be reached, nothing is dropped: the records stay queued, training goes on, and
the next flush tries again. Whatever is still unsent at a checkpoint or at the end of the
run is written to a JSON file beside the checkpoint; the next `ablate run` of the study
sends it (:func:`send_kept`) before it plans anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from harness.files import write_text
from harness.notices import say, warn
from harness.redaction import error_line
from harness.sqlite_store import sqlite_file_fault
from harness.tracking.outage import is_outage

OUTBOX_NAME = "unsent_tracking.json"


class Outbox:
    def __init__(self, client, run_id: str, path: Path | None = None, label: str = ""):
        self.client = client
        self.run_id = run_id
        self.path = path
        self.label = label or run_id
        self.records: list[list] = []  # [kind, payload], oldest first
        self._lock = threading.Lock()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ablate-tracking")
        self._sending: Future | None = None
        self.failing_since: float | None = None
        self.last_error = ""
        self._owner = _claim(path) if path is not None else None  # held while the run is open

    # ---- queueing ----------------------------------------------------------------------

    def metrics(self, points: list[tuple[str, float, int, int]]) -> None:
        """(key, value, timestamp ms, step) points."""
        self._put("metrics", points)

    def params(self, params: dict[str, str]) -> None:
        self._put("params", params)

    def tags(self, tags: dict[str, str]) -> None:
        self._put("tags", tags)

    def dataset(self, fields: dict[str, str]) -> None:
        """An input dataset (see harness.tracking.lineage.dataset_input)."""
        self._put("dataset", fields)

    def text(self, name: str, text: str) -> None:
        self._put("text", [name, text])

    def terminate(self, status: str) -> None:
        self._put("terminate", status)

    def _put(self, kind: str, payload) -> None:
        with self._lock:
            self.records.append([kind, payload])

    # ---- sending -----------------------------------------------------------------------

    def flush(self, wait: bool = False) -> bool:
        """Start sending what is queued; with `wait`, return once this attempt is over, and
        keep what is still unsent on disk. True when everything has reached MLflow."""
        if self._sending is None or self._sending.done():
            self._sending = self._sender.submit(self._send_queued)
        if not wait:
            return False
        self._sending.result()
        if self.records and self.failing_since is None:  # queued while that attempt was finishing
            self._sending = self._sender.submit(self._send_queued)
            self._sending.result()
        self.keep()
        return not self.records

    def _send_queued(self) -> None:
        while True:
            with self._lock:
                if not self.records:
                    break
                kind, payload = self.records[0]
            try:
                _send(self.client, self.run_id, kind, payload)
            except Exception as err:
                if not is_outage(err):  # the store answered no: it would say no again, so the record goes
                    warn(f"the tracking store refused {_describe(kind, payload)} of run {self.label} "
                         f"({error_line(err, 200)}); it is left out and the records after it are sent")
                    with self._lock:
                        self.records.pop(0)
                    continue
                # unreachable, timed out, locked, its file full: keep it, say so once, try later
                self.last_error = error_line(err)
                if self.failing_since is None:
                    self.failing_since = time.time()
                    # a local store on a full disk is no outage: it may take records once space is freed
                    fault = "cannot be written" if sqlite_file_fault(err) else "does not answer"
                    warn(f"the tracking store {fault} for run {self.label} ({self.last_error}); "
                          "training goes on and its records are kept until it takes them")
                return
            with self._lock:
                self.records.pop(0)
            if self.failing_since is not None:
                say(f"the tracking store takes records again; run {self.label}'s kept records are being sent")
                self.failing_since = None

    def keep(self) -> None:
        """Write what is unsent to `path` (or remove the file once everything is sent)."""
        if self.path is None:
            return
        with self._lock:
            records = list(self.records)
        if records:
            write_text(self.path, json.dumps({"run_id": self.run_id, "label": self.label, "records": records}))
        elif self.path.exists():
            self.path.unlink()

    def close(self) -> None:
        self._sender.shutdown(wait=True)
        if self._owner is not None:
            self._owner.close()  # releases the claim
            self._owner = None


def _claim(path: Path):
    """An exclusive lock beside `path` while a live process owns its records, so that no
    other process sends them twice. None when someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_suffix(".lock"), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _describe(kind: str, payload) -> str:
    """A record as a person would name it: 'params train.lr, seed', 'the text config.yaml'."""
    if kind in ("params", "tags"):
        names = list(payload)
        return f"{kind} {', '.join(names[:5])}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if kind == "metrics":
        return f"{len(payload)} metric points ({', '.join(sorted({p[0] for p in payload}))})"
    if kind == "text":
        return f"the text {payload[0]}"
    if kind == "dataset":
        return f"the dataset input {payload.get('name', '')}"
    return f"the final status {payload}"


def _send(client, run_id: str, kind: str, payload) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    if kind == "metrics":
        for start in range(0, len(payload), 1000):
            chunk = payload[start:start + 1000]
            client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in chunk])
    elif kind == "params":
        items = [Param(k, v) for k, v in payload.items()]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start:start + 100])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in payload.items()])
    elif kind == "dataset":
        fields = dict(payload)
        context = InputTag("mlflow.data.context", fields.pop("context"))
        client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**fields), tags=[context])])
    elif kind == "text":
        client.log_text(run_id, payload[1], payload[0])
    elif kind == "terminate":
        client.set_terminated(run_id, payload)
    else:
        raise ValueError(f"unknown tracking record '{kind}'")


def kept_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob(f"*/{OUTBOX_NAME}"))


def send_kept(client, folder: Path) -> tuple[int, list[Path]]:
    """Send the records that runs under `folder` kept while the tracking store was away.
    Returns how many files were sent, and those still unsent."""
    sent, left = 0, []
    for path in kept_files(folder):
        owner = _claim(path)
        if owner is None:  # its run is still open in a live process, which sends them itself
            continue
        with contextlib.closing(owner):
            if not path.exists():  # sent meanwhile by the run that kept it
                continue
            kept = json.loads(path.read_text())
            outbox = Outbox(client, kept["run_id"], None, kept.get("label", ""))
            outbox.records = kept["records"]
            try:
                outbox.flush(wait=True)
            finally:
                outbox.close()
            outbox.path = path
            outbox.keep()  # rewrites what is left, or removes the file
            if outbox.records:
                left.append(path)
            else:
                sent += 1
    return sent, left
