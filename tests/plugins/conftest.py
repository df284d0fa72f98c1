"""Fixtures for the adapter tests: tiny random checkpoints on disk."""

import pytest

from bpclip_core.weights.checkpoint import init_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{'nr': path, 'fr': path} of untrained tiny checkpoints."""
    folder = tmp_path_factory.mktemp("adapter-checkpoints")
    return {
        mode: init_checkpoint("tiny", mode, folder / f"tiny-{mode}.safetensors", random=True) for mode in ("nr", "fr")
    }
