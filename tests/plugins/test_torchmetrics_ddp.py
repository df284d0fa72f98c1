import socket
import subprocess
import sys
from pathlib import Path

import torch

from bpclip_plugins.torchmetrics import BPCLIPScore


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_gloo_processes_sync_to_the_single_process_result(tiny_checkpoints, tmp_path):
    checkpoint = str(tiny_checkpoints["nr"])
    images = torch.rand(8, 3, 48, 48)
    out = str(tmp_path / "result.pt")
    torch.save(images, out + ".images.pt")
    port = _free_port()
    worker = Path(__file__).with_name("ddp_worker.py")
    processes = [
        subprocess.Popen([sys.executable, str(worker), str(rank), "2", checkpoint, port, out]) for rank in range(2)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    synced = torch.load(out, weights_only=True)
    single = BPCLIPScore(checkpoint=checkpoint)
    single.update(images)
    assert torch.allclose(synced["mean"], single.compute(), atol=1e-5)
    every = BPCLIPScore(checkpoint=checkpoint, reduction="none")
    every.update(images)
    assert torch.allclose(synced["all"].sort().values, every.compute().sort().values, atol=1e-5)
    dimensions = BPCLIPScore(checkpoint=checkpoint, return_dimensions=True)
    dimensions.update(images)
    expected = dimensions.compute()
    assert synced["dimensions"].keys() == expected.keys()
    assert all(torch.allclose(synced["dimensions"][k], expected[k], atol=1e-5) for k in expected)
