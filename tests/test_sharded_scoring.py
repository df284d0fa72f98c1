"""``torchrun -m bpclip_core.cli score``: two gloo processes on CPU give the single process's results.

The end-to-end tests score with the bundled models at 64 px (their scores differ from image
to image, so rows in the wrong order would not match); the part files are tested directly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpclip_core.cli import main
from bpclip_core.running.engine import ScoredInput
from bpclip_core.running.sharding import PartError, PartWriter, TorchrunRank, merge_parts, part_path

FAST = ["--no-progress", "--workers", "0", "--size", "64"]


def _torchrun_score(*args: object) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        "-m", "bpclip_core.cli", "score", *FAST, *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _single_score(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["score", *FAST, *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_pictures(folder: Path, names: list[str]) -> Path:
    """Gradients of different brightness and noise: pictures the bundled models score differently."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        ramp = np.linspace(0, 255 * (i + 1) / len(names), 72)[None, :, None].repeat(48, 0).repeat(3, 2)
        noisy = ramp + rng.normal(0, 12 * i, ramp.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / name)
    return folder


@pytest.fixture
def photos(tmp_path) -> Path:
    """Seven inputs: five pictures, a corrupt JPEG and a zero-byte PNG."""
    folder = _write_pictures(tmp_path / "photos", [f"p{i}.png" for i in range(5)])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name or p.name.endswith(".partial"))


def _assert_same_rows(sharded: list[dict], single: list[dict]) -> None:
    """The same rows in the same order: equal but for numbers, which are within 1e-5."""
    assert [r["path"] for r in sharded] == [r["path"] for r in single]
    for got, want in zip(sharded, single):
        _assert_close(got, want)


def _assert_close(got: object, want: object) -> None:
    if isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5)
    elif isinstance(want, (dict, list)):
        assert len(got) == len(want) and (not isinstance(want, dict) or got.keys() == want.keys())
        for key in want if isinstance(want, dict) else range(len(want)):
            _assert_close(got[key], want[key])
    else:
        assert got == want


def _csv_rows(text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    numbers = [k for k in rows[0] if k in ("score", "mos") or k.endswith("_goodness")] if rows else []
    return [{**r, **{k: float(r[k]) if r[k] else None for k in numbers}} for r in rows]


@pytest.mark.slow
def test_two_ranks_write_the_single_process_json_row_for_row(photos, tmp_path, capsys):
    out = tmp_path / "results" / "sharded.json"
    done = _torchrun_score(photos, "--format", "json", "--output", out)
    assert done.returncode == 1, done.stderr[-3000:]  # torchrun exits 1 when its ranks do (bad files)
    assert done.stderr.count("model: ") == 1 and "2 ranks" in done.stderr
    assert done.stderr.count("scored 5 of 7 inputs") == 1 and done.stdout == ""

    code, _, _ = _single_score(capsys, photos, "--format", "json", "--output", tmp_path / "single.json")
    assert code == 1
    single = json.loads((tmp_path / "single.json").read_text())
    sharded = json.loads(out.read_text())
    assert len(sharded) == 7 and len({round(r["score"], 4) for r in sharded if r["score"] is not None}) == 5
    _assert_same_rows(sharded, single)
    errors = {Path(r["path"]).name: r["error"] for r in sharded if r["error"]}
    assert set(errors) == {"corrupt.jpg", "empty.png"} and "empty file" in errors["empty.png"]
    assert _leftovers(out.parent) == []


@pytest.mark.slow
def test_two_ranks_pair_references_by_folder_and_print_csv_to_stdout(tmp_path, capsys):
    # the same name in two subfolders: pairing by relative path must survive the sharding
    names = ["a/x.png", "b/x.png", "c.png", "d.png", "e.png"]
    distorted = _write_pictures(tmp_path / "distorted", names)
    references = _write_pictures(tmp_path / "references", ["b/x.png", "a/x.png", "e.png", "c.png", "d.png"])
    (references / "c.png").unlink()  # c.png has no reference: its row is an error
    done = _torchrun_score(distorted, "--ref", references, "--format", "csv")
    assert done.returncode == 1, done.stderr[-3000:]
    code, single_out, _ = _single_score(capsys, distorted, "--ref", references, "--format", "csv")
    assert code == 1
    sharded, single = _csv_rows(done.stdout), _csv_rows(single_out)
    assert len(sharded) == 5 and sharded[0]["reference"] == str(references / "a" / "x.png")
    assert "no reference image" in {Path(r["path"]).name: r for r in sharded}["c.png"]["error"]
    _assert_same_rows(sharded, single)


@pytest.mark.slow
def test_a_bad_output_is_refused_before_scoring_and_said_once(photos, tmp_path):
    done = _torchrun_score(photos, "--output", photos, "--format", "csv")
    assert done.returncode != 0
    assert done.stderr.count("is a folder; name a file to write") == 1
    assert "model: " not in done.stderr and "scored" not in done.stderr  # nothing was loaded or scored
    assert _leftovers(photos) == []


@pytest.mark.slow
def test_a_rank_that_fails_leaves_the_output_as_it_was_and_is_named(photos, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("an earlier run's results\n")
    (tmp_path / "scores.csv.part-1-of-2").mkdir()  # rank 1 cannot put its part in place
    done = _torchrun_score(photos, "--format", "csv", "--output", out)
    assert done.returncode != 0
    assert "rank 1 of 2 failed: cannot write this rank's part of the results" in done.stderr
    assert "scores.csv.part-1-of-2: Is a directory" in done.stderr
    assert "scored" not in done.stderr
    assert out.read_text() == "an earlier run's results\n"
    assert _leftovers(tmp_path) == ["scores.csv.part-1-of-2"]  # only the folder planted above


def test_torchrun_is_recognised_by_its_variables():
    assert TorchrunRank.from_env({}) is None
    assert TorchrunRank.from_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None  # one process: alone
    place = TorchrunRank.from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert place == TorchrunRank(5, 8, 1, 4) and place.spans_machines and not place.is_main
    assert not TorchrunRank(0, 2, 0, 2).spans_machines
    assert TorchrunRank(1, 2, 1, 2).device("cpu").type == "cpu"


def test_the_shares_cover_every_input_once():
    shares = [list(TorchrunRank(rank, 3).shard(8)) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert [list(TorchrunRank(rank, 4).shard(2)) for rank in range(4)] == [[0], [1], [], []]


def _result(index: int) -> ScoredInput:
    if index == 1:
        return ScoredInput(f"in/{index}.png", error="in/1.png: is an empty file (0 bytes), not an image")
    name = "caf\udce9.png" if index == 2 else f"{index}.png"  # a file name that is not valid UTF-8
    return ScoredInput(f"in/{name}", "ref.png", 0.1 * index, 2.0 * index, [("blurry", 0.5)], {"sharpness": 0.25})


def _write_parts(folder: Path, world_size: int, total: int) -> dict[Path, str]:
    tokens = {}
    for rank in range(world_size):
        place = TorchrunRank(rank, world_size)
        writer = PartWriter(part_path(folder, "out.csv", place), place)
        writer.write([(i, _result(i)) for i in place.shard(total)])
        writer.finish()
        tokens[writer.path] = writer.token
    return tokens


def test_parts_merge_in_input_order_exactly(tmp_path):
    tokens = _write_parts(tmp_path, 2, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv.part-0-of-2", "out.csv.part-1-of-2"]
    assert list(merge_parts(tokens, 5)) == [_result(i) for i in range(5)]


def test_parts_from_another_run_or_short_of_inputs_are_refused(tmp_path):
    tokens = _write_parts(tmp_path, 2, 5)
    with pytest.raises(PartError, match="lack input 5"):
        list(merge_parts(tokens, 6))
    first = next(iter(tokens))
    with pytest.raises(PartError, match="not written by this run"):
        list(merge_parts({**tokens, first: "another run's token"}, 5))
    with pytest.raises(PartError, match="lack input 1"):
        list(merge_parts({first: tokens[first]}, 5))


def test_a_discarded_part_leaves_nothing(tmp_path):
    place = TorchrunRank(1, 2)
    writer = PartWriter(part_path(tmp_path, "out.json", place), place)
    writer.write([(1, _result(1))])
    assert len(list(tmp_path.iterdir())) == 1  # the temporary file: the part is not in place yet
    writer.discard()
    assert list(tmp_path.iterdir()) == []
