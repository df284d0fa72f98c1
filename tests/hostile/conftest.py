"""Fixtures of the hostile-input tests: the generated corpus, tiny checkpoints, a hang guard."""

from __future__ import annotations

import signal

import pytest

from bpclip_core.weights.checkpoint import init_checkpoint

from .corpus import build_image_corpus


@pytest.fixture
def corpus(tmp_path):
    """``(folder, cases)``: the hostile image corpus, freshly generated."""
    folder = tmp_path / "corpus"
    return folder, build_image_corpus(folder)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Random tiny NR and FR checkpoints: ``{"nr": path, "fr": path}``."""
    folder = tmp_path_factory.mktemp("hostile-ckpt")
    return {mode: init_checkpoint("tiny", mode, folder / f"{mode}.safetensors", random=True) for mode in ("nr", "fr")}


@pytest.fixture
def no_hang():
    """Fail the test (instead of hanging the suite) if it runs over 120 s."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fail(*_):
        raise TimeoutError("hung: a hostile input blocked the run")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
