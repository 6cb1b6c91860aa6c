"""`ablate ui`: MLflow's own UI server on this machine, over the study's tracking store."""

from __future__ import annotations

import os
import socket
import sys
from typing import Callable

from harness.errors import AblateError
from harness.redaction import redact
from harness.tracking.tracker import tracking_uri as resolve_uri

# MLflow's UI opens experiments in its GenAI view unless asked for the model-training one
UI_VIEW = "workflowType=machine_learning"


def serve_ui(host: str, port: int, tracking_uri: str | None, say: Callable[[str], None]) -> None:
    """Replace this process with `mlflow ui` on host:port, after saying its link through `say`.
    Raises AblateError when the port is taken: the link would show another server's store."""
    uri = resolve_uri(tracking_uri)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise AblateError(f"cannot serve on {host}:{port} ({err.strerror}): another server may be there, and "
                              "the link would show its store, not this one; pick another --port") from None
    command = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    say(f"MLflow UI on http://{host}:{port}/#/experiments?{UI_VIEW} (store {redact(uri)}); Ctrl-C stops it")
    # the store goes by environment, not argv, where any user of the machine could read a password;
    # MLflow's job runner (GenAI evaluation jobs, trace rollups: about 8 more processes of 200 MB
    # each) has nothing to do for ablate's runs, and stays off unless the environment asks for it
    environment = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    os.execvpe(command[0], command, environment)
