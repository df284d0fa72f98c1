import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from bpclip_core.cli import main


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    for mode in ("nr", "fr"):
        out = folder / f"{mode}.safetensors"
        assert main(["init-checkpoint", "--config", "tiny", "--mode", mode, "--random", "--out", str(out)]) == 0
    return folder


@pytest.fixture
def image_dir(tmp_path, write_random_images):
    return write_random_images(tmp_path / "images", ["a.png", "b.jpg", "c.png"], 70, 90)


def _score(capsys, *args):
    code = main(["score", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_formats(checkpoints, image_dir, capsys):
    nr = checkpoints / "nr.safetensors"
    code, out, err = _score(capsys, image_dir, "--checkpoint", nr, "--format", "json", "--top-k", "2")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["a.png", "b.jpg", "c.png"]
    assert all(isinstance(r["score"], float) and len(r["top_adjectives"]) == 2 for r in rows)
    assert len(rows[0]["dimensions"]) == 6
    assert "UNTRAINED" in err

    code, out, _ = _score(capsys, image_dir, "--checkpoint", nr, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 3
    assert abs(float(table[0]["score"]) - rows[0]["score"]) < 1e-5

    code, out, _ = _score(capsys, image_dir / "a.png", "--checkpoint", nr)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:2] == ["image", "score"]
    assert float(lines[1].split()[1]) == pytest.approx(rows[0]["score"], abs=1e-4)


def test_bad_inputs_are_reported_and_the_rest_scored(checkpoints, image_dir, capsys, tmp_path):
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(image_dir / "tiny.png")
    output = tmp_path / "out" / "scores.json"
    code, _, err = _score(
        capsys, image_dir, "--checkpoint", checkpoints / "nr.safetensors", "--format", "json", "--output", output
    )
    assert code == 1
    rows = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(output.read_text())}
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["score"] is None
    assert "at least 32 px" in rows["tiny.png"]["error"]
    assert all(rows[n]["score"] is not None for n in ("a.png", "b.jpg", "c.png"))
    assert "scored 3 of 5 inputs" in err and "failed:" in err


def test_full_reference_pairs_by_file_name(checkpoints, image_dir, tmp_path, capsys):
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("a.png", "b.jpg"):
        (refs / name).write_bytes((image_dir / name).read_bytes())
    code, out, _ = _score(
        capsys, image_dir, "--ref", refs, "--checkpoint", checkpoints / "fr.safetensors", "--format", "json"
    )
    assert code == 1
    rows = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(out)}
    assert rows["a.png"]["reference"].endswith("refs/a.png") and rows["a.png"]["score"] is not None
    assert "no reference image" in rows["c.png"]["error"]


def test_usage_errors_exit_2(checkpoints, image_dir, capsys, tmp_path):
    assert _score(capsys, image_dir, "--checkpoint", checkpoints / "fr.safetensors")[0] == 2
    code, _, err = _score(capsys, image_dir, "--checkpoint", "no-such-name")
    assert code == 2 and "No official trained BPCLIP weights exist" in err
    code, _, err = _score(capsys, image_dir, "--checkpoint", checkpoints / "fr.safetensors", "--ref", image_dir)
    assert code == 0
    code, _, err = _score(capsys, image_dir, "--checkpoint", checkpoints / "nr.safetensors", "--ref", image_dir)
    assert code == 2 and "is a NR checkpoint but FR scoring" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _score(capsys, tmp_path / "empty", "--checkpoint", checkpoints / "nr.safetensors")
    assert code == 2 and "no images found" in err
    code, _, err = _score(capsys, tmp_path / "absent.jpg", "--checkpoint", checkpoints / "nr.safetensors")
    assert code == 1 and "no such file" in err
    assert main(["score"]) == 2
    code, _, err = _score(capsys, image_dir, "--zero-shot", "--clip-model", "RN101/openai")  # never planted
    assert code == 2 and "CLIP weights for RN101/openai not found" in err


def test_zero_shot_from_the_command_line(planted_clip_rn50, image_dir, capsys):
    code, out, err = _score(capsys, image_dir, "--zero-shot", "--format", "json")
    assert code == 0 and "zero-shot CLIP (RN50/openai)" in err
    assert all(0 <= r["score"] <= 1 for r in json.loads(out))


def test_info(checkpoints, capsys):
    assert main(["info", "--checkpoint", str(checkpoints / "fr.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "mode FR" in out and "TORCH_HOME" in out and "HF_HOME" in out
    assert main(["info"]) == 0  # no checkpoint named: the bundled default model
    assert "bpclip_core/weights/bundled/bpclip-nr.safetensors" in capsys.readouterr().out


def test_not_found_messages_name_the_fix_where_the_user_is(checkpoints, image_dir, capsys):
    from bpclip_core import CheckpointNotFoundError
    from bpclip_core.weights.checkpoint import resolve_checkpoint

    nr = checkpoints / "nr.safetensors"
    code, _, err = _score(capsys, image_dir, "--ref", image_dir, "--checkpoint", "no-such-name")
    assert code == 2 and "--checkpoint" in err
    assert "--zero-shot" not in err and "--mode nr" not in err and "zero_shot" not in err  # FR: no zero-shot
    code, _, err = _score(capsys, image_dir, "--checkpoint", "no-such-name")
    assert code == 2 and "--zero-shot" in err and "zero_shot=True" not in err and "checkpoint=" not in err
    code, _, err = _score(capsys, image_dir, "--checkpoint", "missing/file.safetensors")
    assert code == 2 and "does not exist" in err and "--checkpoint" in err
    code, _, err = _score(capsys, image_dir, "--ref", image_dir, "--checkpoint", nr)
    assert code == 2 and "--ref" in err and "--checkpoint with a FR checkpoint" in err
    with pytest.raises(CheckpointNotFoundError) as fr:
        resolve_checkpoint("no-such-name", mode="fr")
    assert "checkpoint=" in str(fr.value) and "--" not in str(fr.value) and "zero" not in str(fr.value)
    with pytest.raises(CheckpointNotFoundError) as nr_missing:
        resolve_checkpoint("no-such-name", mode="nr")
    assert "zero_shot=True" in str(nr_missing.value) and "--zero-shot" not in str(nr_missing.value)
    with pytest.raises(CheckpointNotFoundError) as path_missing:
        resolve_checkpoint("missing/file.safetensors")
    assert "checkpoint=" in str(path_missing.value) and "--checkpoint" not in str(path_missing.value)


def _fresh(code, *argv, timeout=300):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout)


PARSE_ONLY = """
import contextlib, io, json, sys
from bpclip_core.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    code = main(sys.argv[1:])
heavy = ("torch", "numpy", "PIL", "open_clip", "bpclip_core.running.engine", "pyiqa", "fiftyone")
heavy = [m for m in heavy if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy, "text": out.getvalue() + err.getvalue()}))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["score", "--help"], 0),
        (["init-checkpoint", "--help"], 0),
        (["info", "--help"], 0),
        (["train", "--help"], 0),
        (["evaluate", "--help"], 0),
        (["splits", "--help"], 0),
        (["synthesize", "--help"], 0),
        (["fiftyone", "install", "--help"], 0),
        (["pyiqa", "convert", "--help"], 0),
        (["score"], 2),
        (["score", "x.jpg", "--format", "xml"], 2),
        (["no-such-command"], 2),
    ],
)
def test_help_and_argument_errors_import_no_torch(argv, code):
    """Startup (issue 14.8): parsing needs no torch; timings are in benchmarks/bench_startup.py."""
    run = _fresh(PARSE_ONLY, *argv)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["code"] == code and result["heavy"] == [], result
    if argv[-1] == "--help" and argv[0] != "--help":
        assert "usage: bpclip" in result["text"]


def test_scoring_files_imports_neither_pyiqa_nor_fiftyone(checkpoints, image_dir):
    code = (
        "import sys\n"
        "from bpclip_core.cli import main\n"
        "code = main(['score', '--no-progress', '--workers', '0', sys.argv[1], '--checkpoint', sys.argv[2]])\n"
        "print(code, [m for m in ('pyiqa', 'fiftyone', 'open_clip') if m in sys.modules])\n"
    )
    run = _fresh(code, str(image_dir / "a.png"), str(checkpoints / "nr.safetensors"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "0 []"


def test_messages_name_the_input(checkpoints, image_dir, capsys, tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image_dir / "small.png")
    (image_dir / "empty.jpg").write_bytes(b"")
    code, out, err = _score(capsys, image_dir, "--checkpoint", checkpoints / "nr.safetensors")
    assert code == 1
    rows = {line.split()[0].rsplit("/", 1)[-1]: line for line in out.splitlines()[1:]}
    small, empty = rows["small.png"], rows["empty.jpg"]
    assert "small.png: image is 16x16 px" in small.split("error:", 1)[1]  # the table row names the file
    assert "empty.jpg: is an empty file" in empty and "PIL" not in empty
    assert "scored 3 of 5 inputs" in err


def test_init_checkpoint_and_output_files_get_the_usual_mode(tmp_path, image_dir, capsys):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "new.safetensors"
        assert main(["init-checkpoint", "--config", "tiny", "--random", "--out", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        scores = tmp_path / "scores.csv"
        code, _, _ = _score(capsys, image_dir / "a.png", "--checkpoint", out, "--format", "csv", "--output", scores)
        assert code == 0 and stat.S_IMODE(scores.stat().st_mode) == 0o644
        os.umask(0o027)
        other = tmp_path / "group.safetensors"
        assert main(["init-checkpoint", "--config", "tiny", "--random", "--out", str(other)]) == 0
        assert stat.S_IMODE(other.stat().st_mode) == 0o640  # the umask is respected
    finally:
        os.umask(old)
