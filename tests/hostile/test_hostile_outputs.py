"""Hostile outputs and signals for ``bpclip score``: an ``--output`` that is an input or a
symlink, a disk that fills up, a run that fails before scoring, and a job scheduler's SIGTERM."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpclip_core.cli import EXIT_OUTPUT, EXIT_TERMINATED, EXIT_USAGE, main
from bpclip_core.running.output import ResultWriter

SRC = Path(__file__).resolve().parents[2] / "src"


def _score(capsys, *args):
    code = main(["score", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_output_that_is_an_input_is_refused_before_any_work(tiny_checkpoints, tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png", "b.png"], 64, 64)
    references = write_random_images(tmp_path / "refs", ["a.png", "b.png"], 64, 64)
    before = (images / "a.png").read_bytes()
    (tmp_path / "link.json").symlink_to(images / "b.png")
    for output in (images / "a.png", tmp_path / "link.json"):
        code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--output", output)
        assert code == EXIT_USAGE and "is one of the inputs" in err and "model:" not in err, err
    code, _, err = _score(
        capsys, images, "--ref", references, "--checkpoint", tiny_checkpoints["fr"], "--output", references / "a.png"
    )
    assert code == EXIT_USAGE and "is one of the inputs" in err, err
    assert (images / "a.png").read_bytes() == before and (tmp_path / "link.json").is_symlink()


def test_a_symlinked_output_is_written_through_to_its_target(tiny_checkpoints, tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    (tmp_path / "results").mkdir()
    target = tmp_path / "results" / "scores.json"
    target.write_text("[]")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--format", "json", "--output", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [os.path.basename(r["path"]) for r in json.loads(target.read_text())] == ["a.png"]
    assert not list(tmp_path.rglob("*.partial"))


class FillsUp:
    """A file stream whose disk fills up after ``room`` characters."""

    def __init__(self, stream, room: int) -> None:
        self.stream, self.room = stream, room

    def write(self, text: str) -> int:
        self.room -= len(text)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def test_a_disk_that_fills_mid_run_exits_4_and_leaves_the_output_as_it_was(
    tiny_checkpoints, tmp_path, capsys, monkeypatch, write_random_images
):
    images = write_random_images(tmp_path / "images", ["a.png", "b.png", "c.png"], 64, 64)
    output = tmp_path / "out.json"
    output.write_text("[]\n")
    real_open = ResultWriter._open
    monkeypatch.setattr(ResultWriter, "_open", lambda self, out: FillsUp(real_open(self, out), room=600))
    code, _, err = _score(
        capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--batch-size", "1", "--format", "json",
        "--output", output,
    )  # fmt: skip
    assert code == EXIT_OUTPUT, err
    assert "No space left on device" in err and "closed file" not in err and "Traceback" not in err
    assert output.read_text() == "[]\n" and not list(tmp_path.glob(".out.json.*.partial"))


def test_a_full_device_as_output_exits_4(tiny_checkpoints, tmp_path, capsys, write_random_images):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--output", "/dev/full")
    assert code == EXIT_OUTPUT and "No space left on device" in err, err


def test_a_run_that_fails_before_scoring_writes_nothing_to_stdout(tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    for fmt in ("json", "csv", "table"):
        code, out, err = _score(capsys, images, "--checkpoint", broken, "--format", fmt)
        assert code == EXIT_USAGE and "broken.safetensors" in err
        assert out == "", out  # no lone "[" (or header) left behind


SLOW_SCORE = """
import sys, time
import bpclip_core.running.engine as engine
finish = engine.QualityEngine._finish
engine.QualityEngine._finish = lambda self, *a: (time.sleep(0.3), finish(self, *a))[1]  # a slow model
from bpclip_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _terminate_when(process: subprocess.Popen, ready, timeout: float = 120.0) -> int:
    """Send SIGTERM once ``ready()`` holds (some rows are written); the exit code."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before it could be terminated"
        assert time.monotonic() < deadline, "no rows were written"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def _slow_run(args: list, stdout) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-c", SLOW_SCORE, "score", "--no-progress", "--batch-size", "1", "--workers", "0"]
    return subprocess.Popen([*command, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, env=env)


def test_sigterm_keeps_the_rows_scored_so_far_like_ctrl_c(tiny_checkpoints, tmp_path, write_random_images, no_hang):
    names = [f"{i:02d}.png" for i in range(40)]
    images = write_random_images(tmp_path / "images", names, 64, 64)
    output = tmp_path / "out.json"

    def rows_written() -> bool:
        return any('"path"' in p.read_text() for p in tmp_path.glob(".out.json.*.partial"))

    run = _slow_run([images, "--checkpoint", tiny_checkpoints["nr"], "--format", "json", "--output", output], None)
    code = _terminate_when(run, rows_written)
    err = run.stderr.read().decode()
    assert code == EXIT_TERMINATED and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    rows = json.loads(output.read_text())
    assert 1 <= len(rows) < len(names) and [os.path.basename(r["path"]) for r in rows] == names[: len(rows)]
    assert f"wrote the {len(rows)} results scored so far" in err
    assert not list(tmp_path.glob(".out.json.*.partial"))


def test_sigterm_leaves_json_on_stdout_complete(tiny_checkpoints, tmp_path, write_random_images, no_hang):
    images = write_random_images(tmp_path / "images", [f"{i:02d}.png" for i in range(40)], 64, 64)
    stdout = tmp_path / "stdout.json"
    with stdout.open("w") as handle:
        run = _slow_run([images, "--checkpoint", tiny_checkpoints["nr"], "--format", "json"], handle)
        code = _terminate_when(run, lambda: '"path"' in stdout.read_text())
    assert code == EXIT_TERMINATED, run.stderr.read().decode()
    assert len(json.loads(stdout.read_text())) >= 1  # closed with "]": valid JSON
