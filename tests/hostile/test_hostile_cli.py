"""The ``bpclip score`` command on hostile inputs and outputs: exit codes, output safety, encoding."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
import torch

import bpclip_core.running.engine as engine_module
from bpclip_core.cli import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_SOME_FAILED, EXIT_USAGE, main
from bpclip_core.weights.checkpoint import load_checkpoint


def _score(capsys, *args):
    code = main(["score", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_corpus_through_the_cli_in_every_format(corpus, tiny_checkpoints, tmp_path, capsys, no_hang):
    folder, cases = corpus
    for fmt in ("json", "csv", "table"):
        output = tmp_path / f"out.{fmt}"
        code, _, err = _score(
            capsys, folder, "--checkpoint", tiny_checkpoints["nr"], "--format", fmt, "--output", output
        )
        assert code == EXIT_SOME_FAILED and "Traceback" not in err
        text = output.read_text(encoding="utf-8")  # valid UTF-8, whatever the file names
        if fmt == "json":
            rows = json.loads(text)
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        else:
            lines = text.splitlines()
            assert len(lines) == len(cases) + 1  # a newline in a name does not break a row
            assert any("new\\nline.png" in line for line in lines)
            continue
        assert len(rows) == len(cases)
        by_name = {os.path.basename(r["path"]): r for r in rows}
        assert "caf\\xe9.png" in by_name and "new\nline.png" in by_name
        for name, case in cases.items():
            row = by_name[name.replace("\udce9", "\\xe9")]
            assert bool(row["error"]) == (case.error is not None), (name, row)
    assert f"scored {sum(c.error is None for c in cases.values())} of {len(cases)} inputs" in err


def test_output_is_checked_before_scoring(tiny_checkpoints, tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    (tmp_path / "a_file").write_text("x")
    for output, message in [
        (tmp_path, "is a folder"),
        (tmp_path / "a_file" / "out.json", "cannot be written"),
    ]:
        code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--output", output)
        assert code == EXIT_USAGE and message in err and "model:" not in err, err  # before the model loads


def test_ctrl_c_exits_130_and_leaves_a_valid_current_output(
    tiny_checkpoints, tmp_path, capsys, monkeypatch, write_random_images
):
    images = write_random_images(tmp_path / "images", ["a.png", "b.png", "c.png"], 64, 64)
    output = tmp_path / "out.json"
    output.write_text('[{"path": "stale, from an earlier run"}]')
    real = engine_module.QualityEngine.iter_scores

    def interrupted(self, *args, **kwargs):
        for i, item in enumerate(real(self, *args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(engine_module.QualityEngine, "iter_scores", interrupted)
    code, _, err = _score(
        capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--batch-size", "1", "--format", "json",
        "--output", output,
    )  # fmt: skip
    assert code == EXIT_INTERRUPTED and "Traceback" not in err and "interrupted" in err
    rows = json.loads(output.read_text())
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png"]  # the rows so far, valid JSON
    assert not list(tmp_path.glob(".out.json.*.partial"))


def test_internal_errors_have_their_own_exit_code(tiny_checkpoints, tmp_path, capsys, monkeypatch, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("a bug")
        yield

    monkeypatch.setattr(engine_module.QualityEngine, "iter_scores", broken)
    code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"])
    assert code == EXIT_INTERNAL != EXIT_SOME_FAILED and "internal error (ZeroDivisionError)" in err


def test_bad_devices_are_usage_errors(tiny_checkpoints, tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--device", "foo")
    assert code == EXIT_USAGE and "unknown device 'foo'" in err
    if not torch.cuda.is_available():
        code, _, err = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--device", "cuda")
        assert code == EXIT_USAGE and "no CUDA GPU" in err


def test_nan_scores_are_errors_and_json_stays_strict(
    tiny_checkpoints, tmp_path, capsys, monkeypatch, write_random_images
):
    images = write_random_images(tmp_path / "images", ["a.png", "b.png"], 64, 64)
    model = load_checkpoint(tiny_checkpoints["nr"])
    with torch.no_grad():
        for parameter in model.regressor.parameters():
            parameter.fill_(float("nan"))
    monkeypatch.setattr(engine_module, "load_checkpoint", lambda *_, **__: model)
    code, out, _ = _score(capsys, images, "--format", "json")
    assert code == EXIT_SOME_FAILED
    rows = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
    assert all(r["score"] is None and "non-finite score" in r["error"] for r in rows)


def test_max_pixels_flag_and_fr_without_matches(tiny_checkpoints, tmp_path, capsys, write_random_images):
    images = write_random_images(tmp_path / "images", ["a.png"], 64, 64)
    code, out, _ = _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--max-pixels", "100")
    assert code == EXIT_SOME_FAILED and "pixel limit of 100 px" in out
    assert _score(capsys, images, "--checkpoint", tiny_checkpoints["nr"], "--max-pixels", "0")[0] == EXIT_USAGE
    refs = write_random_images(tmp_path / "refs", ["other.png"], 64, 64)
    code, _, err = _score(capsys, images, "--ref", refs, "--checkpoint", tiny_checkpoints["fr"])
    assert code == EXIT_USAGE and "matches any of the 1 images" in err


def test_help_documents_exit_codes(capsys):
    assert main(["score", "--help"]) == 0
    assert "130 interrupted" in capsys.readouterr().out


def test_two_writers_of_one_output_never_interleave(tmp_path):
    from bpclip_core.running.engine import ScoredInput
    from bpclip_core.running.output import ResultWriter

    output = tmp_path / "out.csv"
    first, second = ResultWriter("csv", output), ResultWriter("csv", output)
    first.write([ScoredInput("a.png", score=0.5)])
    second.write([ScoredInput("b.png", score=0.25), ScoredInput("c.png", error="broken")])
    first.finish()
    assert [r["path"] for r in csv.DictReader(output.open(newline=""))] == ["a.png"]
    second.finish()  # the last to finish wins, whole: never a mix of both runs
    assert [r["path"] for r in csv.DictReader(output.open(newline=""))] == ["b.png", "c.png"]
    assert not list(tmp_path.glob(".out.csv.*"))
