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
    assert "bpclip_core/models/bpclip-nr.safetensors" in capsys.readouterr().out
