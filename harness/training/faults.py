"""Faults that end one run but not the study: out of memory, an unusable checkpoint.

A study hit by one marks that run failed (state tag `failed`, the reason in
`failure_reason`), counts it in the report and goes on with the next run; the next
`ablate run` of the study tries it again. `ablate train` reports it as a user error.
"""

from __future__ import annotations

import contextlib

import torch

from harness.errors import AblateError
from harness.redaction import error_line


class RunFailed(AblateError):
    """This run cannot go on; the message is the reason recorded on it."""


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):  # CUDA's
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))


@contextlib.contextmanager
def out_of_memory_fails_the_run(where: str):
    try:
        yield
    except (RuntimeError, torch.OutOfMemoryError) as err:
        if not is_out_of_memory(err):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise RunFailed(f"out of memory {where} ({error_line(err)}); reduce train.batch_size or the model, "
                        "or raise train.grad_accum") from None
