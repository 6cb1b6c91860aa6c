"""Which tracking-store errors are outages, worth waiting for, and which are refusals.

A store that does not answer (a refused connection, a timeout, a locked sqlite file, HTTP 5xx)
may answer later: its records are kept and sent again. A store that answers "no" (MLflow's
INVALID_PARAMETER_VALUE, any other HTTP 4xx, a constraint error) will say no again: waiting
for it would only block the records behind the refused one.
"""

from __future__ import annotations

from harness.errors import causes


def is_outage(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) says the store did not answer: a
    network or database connection error, a timeout, a locked sqlite file, or a server error
    (HTTP 5xx). Waiting may cure these; nothing else."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    waitable = (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout,
                sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)
    return any(isinstance(seen, waitable) or (isinstance(seen, MlflowException) and seen.get_http_status_code() >= 500)
               for seen in causes(err))
