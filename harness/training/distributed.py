"""Data-parallel training under torchrun: one process per GPU (or per CPU share with gloo).

`train.batch_size` stays the global batch: every rank draws the same windows from the same
generator and keeps its slice, so a run on N processes sees exactly the batches of a run on
one, and DDP's gradient average equals the single-process mean. Only rank 0 logs and saves.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from harness.errors import AblateError


class DataParallel:
    def __init__(self):
        self.world = world_size()
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise AblateError(f"train.batch_size ({batch_size}) must be divisible by the {self.world} processes")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return batch
        share = batch.size(0) // self.world
        return batch[self.rank * share:(self.rank + 1) * share]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of `value` over the processes (gloo has no AVG: sum, then divide)."""
        if self.active:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world
        return value

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def world_size() -> int:
    """How many data-parallel processes this one is part of (torchrun and srun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
