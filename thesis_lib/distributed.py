"""Data-parallel training with PyTorch's own engine, started by ``torchrun``.

``torchrun --nproc_per_node N -m thesis_lib train ...`` starts N copies of the
ordinary ``train`` command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
their environment. :func:`setup` notices them and joins the process group
(gloo on CPUs, NCCL on GPUs, each process on GPU ``LOCAL_RANK``); ``train``
then wraps the net in ``DistributedDataParallel`` and gives every process its
own share of each epoch's shuffled order (:func:`shard`, what
``torch.utils.data.DistributedSampler`` does). ``--batch-size`` stays the
*global* batch: each of N processes takes ``batch / N`` clips per step and DDP
averages the gradients, so the update is the one a single process would make
with the whole batch (batch-norm statistics are per process). Only rank 0
writes files and prints.

Without those variables everything here is a no-op and ``train`` runs as one
process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from ``torchrun``'s environment (1 process if absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank, world, local)


def setup(device: torch.device) -> tuple[DistInfo, torch.device, bool]:
    """Join the process group if started by ``torchrun``.

    Returns ``(info, device, created)``: on CUDA the device becomes
    ``cuda:LOCAL_RANK``; ``created`` says this call made the group (and so
    :func:`teardown` should end it).
    """
    info = env_info()
    if not info.enabled:
        return info, device, False
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return info, device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info, device, True


def teardown(created: bool, wait: bool = True) -> None:
    """Leave the process group if :func:`setup` made it (after a barrier unless ``wait=False``)."""
    if created and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def shard(order: np.ndarray, info: DistInfo) -> np.ndarray:
    """This process's part of an epoch's order, as ``DistributedSampler`` cuts it.

    The order is padded by repeating its head to a multiple of the world size
    so every process takes the same number of steps; process ``r`` takes
    positions ``r, r + N, r + 2N, ...``.
    """
    if not info.enabled:
        return order
    total = math.ceil(len(order) / info.world_size) * info.world_size
    if total > len(order):
        order = np.concatenate([order, order[: total - len(order)]])
    return order[info.rank:total:info.world_size]


def local_batch(batch_size: int, info: DistInfo) -> int:
    """Clips per step in this process for a *global* batch of ``batch_size``."""
    if not info.enabled:
        return batch_size
    return max(1, batch_size // info.world_size)


def all_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum numbers over all processes (identity when not distributed)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
