"""FR pairs of two formats (issue 29): a JPEG scored against a PNG original of the same size, in
the command, pyiqa, FiftyOne and the engine's two pipelines. Before, only the JPEG was decoded
at a reduced scale: "full-reference pairs must have the same size: distorted (256, 256) vs
reference (512, 512)". Pairs of two sizes are refused with the files' own sizes."""

from __future__ import annotations

import json

import pytest

from bpclip_core.cli import main
from bpclip_core.inputs.protocol import TestTimeProtocol
from bpclip_core.running.engine import QualityEngine
from bpclip_core.weights.checkpoint import load_checkpoint
from test_one_decode import photo_like


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(distorted JPEG at quality 5, its PNG original), both 512x512 as in the issue."""
    folder = tmp_path_factory.mktemp("fr-formats")
    original = photo_like(512, 512)
    original.save(folder / "astronaut.png")
    original.save(folder / "astronaut_jpegq5.jpg", quality=5)
    return folder / "astronaut_jpegq5.jpg", folder / "astronaut.png"


@pytest.fixture(scope="module")
def bundled_fr():
    return load_checkpoint(mode="fr")


def _engine(model, pipeline: str = "cpu", **options) -> QualityEngine:
    return QualityEngine(model, device="cpu", attention="eager", num_workers=0, pipeline=pipeline, **options)


def test_the_command_scores_a_jpeg_against_a_png(pair, capsys):
    distorted, reference = pair
    args = ["score", "--no-progress", "--format", "json", "--workers", "0"]
    code = main([*args, str(distorted), "--ref", str(reference)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (row,) = json.loads(captured.out)
    assert row["error"] is None and 0 <= row["score"] <= 1


def test_pyiqa_scores_a_jpeg_against_a_png(pair, bundled_fr):
    import pyiqa

    import bpclip_plugins  # noqa: F401  (registers BPCLIP with pyiqa)

    distorted, reference = pair
    metric = pyiqa.create_metric("bpclip_fr", device="cpu")
    expected = _engine(bundled_fr).score(distorted, reference)[0].score
    assert metric(str(distorted), str(reference)).item() == pytest.approx(expected, abs=1e-5)


def test_fiftyone_scores_a_jpeg_against_a_png(pair, request):
    import fiftyone as fo

    from bpclip_plugins.fiftyone import compute_quality

    distorted, reference = pair
    name = f"bpclip-test-{request.node.name}"[:100]
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    try:
        dataset.add_sample(fo.Sample(filepath=str(distorted), reference=str(reference)))
        summary = compute_quality(dataset, mode="fr", reference_field="reference", num_workers=0)
        assert summary.scored == 1 and summary.failed == 0
    finally:
        dataset.delete()


@pytest.mark.parametrize(("pipeline", "decoder"), [("cpu", "auto"), ("device", "pil"), ("device", "torchvision")])
def test_pairs_of_two_formats_decode_at_one_scale_in_both_pipelines(bundled_fr, pair, tmp_path, pipeline, decoder):
    distorted, reference = pair
    (result,) = _engine(bundled_fr, pipeline, jpeg_decoder=decoder).score(distorted, reference)
    assert result.error is None
    # reduced decoding as well: at size 32 a 1024x768 pair decodes at 1/2 (a JPEG in the IDCT, a PNG by a box)
    big = photo_like(1024, 768)
    big.save(tmp_path / "big.png")
    big.save(tmp_path / "big.jpg", quality=20)
    small = TestTimeProtocol("resize", size=32)
    engine = _engine(bundled_fr, pipeline, jpeg_decoder=decoder, protocol=small)
    for dist, ref in (("big.jpg", "big.png"), ("big.png", "big.jpg")):
        (result,) = engine.score(tmp_path / dist, tmp_path / ref)
        assert result.error is None, result.error


def test_pairs_of_two_sizes_are_refused_with_their_own_sizes(bundled_fr, tmp_path):
    photo_like(1024, 768).save(tmp_path / "big.jpg")
    photo_like(512, 384).save(tmp_path / "half.png")  # both 512x384 once reduced: never scored as a pair
    engine = _engine(bundled_fr, protocol=TestTimeProtocol("resize", size=32))
    for pipeline in ("cpu", "device"):
        engine.pipeline = pipeline
        (result,) = engine.score(tmp_path / "big.jpg", tmp_path / "half.png")
        assert result.score is None and "distorted (768, 1024) vs reference (384, 512)" in result.error, result.error
