"""Run by test_torchmetrics_ddp: one gloo process scoring its half of the data."""

import os
import sys

import torch
import torch.distributed as dist

from bpclip_plugins.torchmetrics import BPCLIPScore


def main(rank: int, world: int, checkpoint: str, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    images = torch.load(out + ".images.pt", weights_only=True)
    mean_metric = BPCLIPScore(checkpoint=checkpoint)
    all_metric = BPCLIPScore(checkpoint=checkpoint, reduction="none")
    dimensions = BPCLIPScore(checkpoint=checkpoint, return_dimensions=True)  # its goodness_sum state
    for batch in images[rank::world].split(2):
        mean_metric.update(batch)
        all_metric.update(batch)
        dimensions.update(batch)
    result = {"mean": mean_metric.compute(), "all": all_metric.compute(), "dimensions": dimensions.compute()}
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
