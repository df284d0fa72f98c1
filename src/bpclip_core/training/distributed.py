"""DistributedDataParallel plumbing: the same ``bpclip train`` runs alone or under ``torchrun``.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) the process group is
initialised with NCCL on GPUs and gloo on CPU. Each epoch's shuffled order is the same on
every rank (seeded by seed and epoch) and is dealt out round-robin, padded to equal length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from bpclip_core.running.devices import resolve_device


@dataclass
class DistributedContext:
    """Where this process stands: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str = "auto") -> DistributedContext:
    """Initialise the process group when launched by ``torchrun``; a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    """Tear down the process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def epoch_order(num_items: int, seed: int, epoch: int, context: DistributedContext) -> list[int]:
    """This rank's share of epoch ``epoch``'s shuffled item order (padded so ranks get equal shares)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    if context.world_size > 1:
        padded = -(-num_items // context.world_size) * context.world_size
        order += order[: padded - num_items]
        order = order[context.rank :: context.world_size]
    return order


def mean_across_ranks(value: float, context: DistributedContext) -> float:
    """The mean of a scalar over all ranks (itself when not distributed)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def grouped_epoch_order(
    groups: list[int], group_size: int, seed: int, epoch: int, context: DistributedContext
) -> list[int]:
    """This rank's share of epoch ``epoch``'s order in runs of ``group_size`` items of one picture.

    Each picture's items are shuffled and cut into runs (the last run topped up with the
    picture's first items), the runs are shuffled, and ranks get whole runs, so a batch whose
    size is a multiple of ``group_size`` holds whole groups. Every item appears each epoch.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    runs: list[list[int]] = []
    for group in sorted(members):
        items = [members[group][i] for i in torch.randperm(len(members[group]), generator=generator).tolist()]
        items += (items * group_size)[: -len(items) % group_size]
        runs += [items[start : start + group_size] for start in range(0, len(items), group_size)]
    runs = [runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()]
    if context.world_size > 1:
        runs += runs[: -len(runs) % context.world_size]
        runs = runs[context.rank :: context.world_size]
    return [index for run in runs for index in run]
