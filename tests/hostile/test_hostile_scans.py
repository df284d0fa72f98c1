"""Hostile folder trees: too deep to recurse into, paths too long for the system; each is
reported as its own input's error while every other image is scored."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpclip_core.cli import main
from bpclip_core.inputs.decoding import ScanProblem, find_images
from bpclip_core.running.engine import QualityEngine

DEPTH = 1200  # deeper than Python's recursion limit (1000)


def _image(path: Path | str, dir_fd: int | None = None) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    if dir_fd is None:
        Image.fromarray(pixels).save(path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")


@contextlib.contextmanager
def nested_folders(root: Path, name: str, count: int) -> Iterator[int]:
    """``count`` folders ``name`` nested in ``root``, made through folder descriptors (no path is
    ever longer than one name), with an image at the bottom; yields the deepest folder's
    descriptor and removes it all bottom up (rmtree would recurse as deep as the tree)."""
    fds = [os.open(root, os.O_RDONLY)]
    try:
        for _ in range(count):
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
        _image("bottom.png", dir_fd=fds[-1])
        yield fds[-1]
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink("bottom.png", dir_fd=fds[-1])
        for child, parent in zip(reversed(fds[1:]), reversed(fds[:-1])):
            os.close(child)
            os.rmdir(name, dir_fd=parent)
        os.close(fds[0])


@pytest.fixture
def deep_tree(tmp_path):
    """``tmp_path/deep``: an image at the top and one at the bottom of a chain of DEPTH folders."""
    root = tmp_path / "deep"
    root.mkdir()
    _image(root / "top.png")
    with nested_folders(root, "d", DEPTH):
        yield root


@pytest.fixture
def too_long_tree(tmp_path):
    """``tmp_path/long``: an image at the top, and one in folders nested until their path is
    over 4,096 bytes (PATH_MAX): 25 names of 200 bytes."""
    root = tmp_path / "long"
    root.mkdir()
    _image(root / "top.png")
    with nested_folders(root, "n" * 200, 25):
        yield root


def test_a_tree_deeper_than_the_recursion_limit_is_scanned(deep_tree, tiny_checkpoints, no_hang):
    found = find_images([deep_tree])
    assert [p.name for p in found] == ["bottom.png", "top.png"]
    results = QualityEngine.from_checkpoint(tiny_checkpoints["nr"], attention="eager", num_workers=0).score(deep_tree)
    assert [r.error for r in results] == [None, None]


def test_a_path_over_the_system_limit_is_that_folders_error(too_long_tree, tiny_checkpoints, capsys, no_hang):
    found = find_images([too_long_tree])
    problems = [p for p in found if isinstance(p, ScanProblem)]
    assert len(problems) == 1 and "cannot be scanned: File name too long" in problems[0].reason
    engine = QualityEngine.from_checkpoint(tiny_checkpoints["nr"], attention="eager", num_workers=0)
    by_error = {r.error is None: r for r in engine.score(too_long_tree)}
    assert by_error[True].path.endswith("top.png")
    assert "File name too long" in by_error[False].error
    code = main(["score", str(too_long_tree), "--checkpoint", str(tiny_checkpoints["nr"]), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # some inputs failed; never 3 (internal error)
    rows = json.loads(captured.out)
    assert sorted(row["error"] is None for row in rows) == [False, True]
    assert "scored 1 of 2 inputs" in captured.err
