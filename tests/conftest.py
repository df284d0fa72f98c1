"""Shared fixtures: tiny random models, generated images, and isolated weight caches.

Every cache a test could touch points into a temporary folder, and the hub is offline:
no test reads the user's caches or reaches the network.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def _remove_stale_session_caches() -> None:
    """Remove the caches of earlier test sessions that were killed before cleaning up."""
    for folder in Path(tempfile.gettempdir()).glob("bpclip-tests-*"):
        try:
            pid = int((folder / "pid").read_text())
            os.kill(pid, 0)  # still running: keep it
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):  # no pid file yet, or another user's process: leave it
            pass


_remove_stale_session_caches()
# Set before huggingface_hub is imported anywhere: its cache path is fixed at import time.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="bpclip-tests-"))
(_SESSION_CACHE / "pid").write_text(str(os.getpid()))
# removed at exit (after the private mongod below stops: atexit runs handlers last-in, first-out);
# the caches hold a FiftyOne database of several hundred MB
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
os.environ["HF_HOME"] = str(_SESSION_CACHE / "hf")
os.environ["HF_HUB_CACHE"] = str(_SESSION_CACHE / "hf" / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = str(_SESSION_CACHE / "torch")
os.environ["BPCLIP_HOME"] = str(_SESSION_CACHE / "bpclip")
os.environ.pop("BPCLIP_CHECKPOINT", None)
# FiftyOne: our plugins folder, no telemetry, and a database of our own (see below)
os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_CACHE / "fiftyone-db")
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_SESSION_CACHE / "fiftyone-plugins")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"


def _private_mongod() -> None:
    """Start a mongod of our own on a free local port and point FiftyOne at it.

    FiftyOne otherwise joins any FiftyOne database service already running on the machine,
    whatever FIFTYONE_DATABASE_DIR says: the tests' datasets would land in another process's
    database (and theirs in ours). The App server the tests start inherits the URI.
    """
    import importlib.util
    import socket
    import subprocess
    import time

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        return  # no FiftyOne extra: nothing to isolate
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not mongod.is_file():
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = _SESSION_CACHE / "mongod"
    folder.mkdir()
    log = open(folder / "mongod.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(mongod), "--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    atexit.register(lambda: (server.terminate(), server.wait(timeout=30), log.close()))
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None or time.monotonic() > deadline:
            tail = (folder / "mongod.log").read_text()[-2000:]
            raise RuntimeError(f"the tests' private mongod did not start: {tail}")
        time.sleep(0.1)
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"


_private_mongod()

import pytest  # noqa: E402
import torch  # noqa: E402

from bpclip_core import BPCLIP, preset  # noqa: E402
from bpclip_core.model.text import adjective_embeddings  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def write_random_images():
    """``write(folder, names, height, width)``: seeded random RGB images; the suffix picks the format."""
    import numpy as np
    from PIL import Image

    def write(folder: Path, names: list[str], height: int, width: int) -> Path:
        rng = np.random.default_rng(0)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
        return folder

    return write


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Each test gets its own BPCLIP_HOME and no BPCLIP_CHECKPOINT."""
    monkeypatch.setenv("BPCLIP_HOME", str(tmp_path / "bpclip-home"))
    monkeypatch.delenv("BPCLIP_CHECKPOINT", raising=False)


@pytest.fixture(scope="session")
def tiny_text_embeddings() -> torch.Tensor:
    """The 40 adjective embeddings from the randomly initialised tiny CLIP text tower."""
    torch.manual_seed(0)
    return adjective_embeddings(preset("tiny").text_model, pretrained=False)


def make_model(mode: str, text_embeddings: torch.Tensor, seed: int = 0) -> BPCLIP:
    torch.manual_seed(seed)
    return BPCLIP(preset("tiny", mode=mode), text_embeddings).eval()


@pytest.fixture
def model_factory(tiny_text_embeddings):
    """Build a fresh tiny model: ``model_factory(mode, seed=0)``."""
    return lambda mode, seed=0: make_model(mode, tiny_text_embeddings, seed)


@pytest.fixture
def nr_model(tiny_text_embeddings) -> BPCLIP:
    return make_model("nr", tiny_text_embeddings)


@pytest.fixture
def fr_model(tiny_text_embeddings) -> BPCLIP:
    return make_model("fr", tiny_text_embeddings)


@pytest.fixture
def images() -> torch.Tensor:
    """A batch of two smooth random 64x64 images in [0, 1]."""
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)


@pytest.fixture(scope="session")
def planted_resnet18() -> dict[str, torch.Tensor]:
    """Random ResNet18 weights written where torchvision keeps its ImageNet file (real name, .pth)."""
    import torchvision

    from bpclip_core.model.pretrained import torchvision_weights_path

    torch.manual_seed(18)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = torchvision_weights_path("resnet18")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.fixture(scope="session")
def planted_clip_rn50() -> dict[str, torch.Tensor]:
    """Random CLIP RN50 weights laid out as open_clip's file in a Hugging Face cache snapshot."""
    from huggingface_hub.constants import HF_HUB_CACHE
    from safetensors.torch import save_file

    from bpclip_core.model.pretrained import build_clip_model, clip_hub_repo

    torch.manual_seed(50)
    state = {k: v.contiguous() for k, v in build_clip_model("RN50/openai", pretrained=False).state_dict().items()}
    repo_dir = Path(HF_HUB_CACHE) / f"models--{clip_hub_repo('RN50', 'openai').replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    save_file(state, str(snapshot / "open_clip_model.safetensors"))
    return state
