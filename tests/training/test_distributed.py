import os
import socket
import subprocess
import sys

import pytest

from bpclip_core.training.distributed import DistributedContext, epoch_order
from bpclip_core.weights.checkpoint import read_metadata


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_epoch_order_deals_every_item_to_the_ranks():
    shares = [epoch_order(10, 3, 1, DistributedContext(rank=r, world_size=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 5
    assert sorted(shares[0] + shares[1]) == list(range(10))
    assert epoch_order(10, 3, 1, DistributedContext()) != epoch_order(10, 3, 2, DistributedContext())


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun_train_and_write_a_checkpoint(small_synthetic_csv, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port(),
        "-m", "bpclip_core.cli", "train", "--dataset", "csv", "--data", str(small_synthetic_csv), "--model", "tiny",
        "--random-init", "--epochs", "1", "--batch-size", "4", "--patch-size", "48", "--device", "cpu",
        "--out", str(out), "--no-progress", "--cache-images", "--set", "max_steps_per_epoch=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metadata(out / "best.safetensors")["provenance"]["trained"] is True
    assert (out / "resume.pt").is_file() and (out / "report" / "metrics.json").is_file()
