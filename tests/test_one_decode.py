"""One decode, one score (issue 29): an image scores alike as a file, a PIL image, a uint8 and a
float tensor, in every front end and both pipelines, and files of one size decode to one size.

The photo is 1536x1152, which the reduced decoding of before drafted at 1/4 (``resize``, size
224) and 1/2 (``crops``): its file then scored 3.3e-3 and 1.5e-3 off its tensor. Files are now
reduced only to ``REDUCTION_MARGIN`` (8) times the side the protocol resizes to: this one is
decoded at full scale (the same score); the 4400x3600 one still is (at 1/2), within 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bpclip_core.inputs.decoding import load_image, reduction_factor
from bpclip_core.inputs.protocol import REDUCTION_MARGIN, TestTimeProtocol
from bpclip_core.running.engine import QualityEngine
from bpclip_core.weights.checkpoint import load_checkpoint

TOLERANCE = 1e-3  # on scores in [0, 1]
ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("resize", "crops")
PIPELINES = ("cpu", "device")


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A bundled photo enlarged, with sharp lines and grain: fine detail for a reduced decoding to lose."""
    rng = np.random.default_rng(seed)
    picture = Image.open(ROOT / "examples" / "images" / "astronaut.jpg").convert("RGB")
    picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(picture)
    for _ in range(40):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        end = (x + int(rng.integers(-width // 3, width // 3)), y + int(rng.integers(-height // 3, height // 3)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 4)))
    grain = rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(picture, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def as_tensors(path: Path) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    """The file as a PIL image (decoded by PIL at full scale), a uint8 and a float tensor."""
    with Image.open(path) as opened:
        pil = opened.convert("RGB")
    uint8 = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    return pil, uint8, uint8.float() / 255


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("one-decode") / "photo.jpg"
    photo_like(1536, 1152).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def bundled_nr():
    return load_checkpoint(mode="nr")


def _engine(model, protocol: str, pipeline: str, **options) -> QualityEngine:
    return QualityEngine(model, device="cpu", attention="eager", num_workers=0, protocol=protocol, pipeline=pipeline,
                         **options)  # fmt: skip


def _assert_alike(scores: dict[str, float], expected: float) -> None:
    worst = max(abs(score - expected) for score in scores.values())
    assert worst <= TOLERANCE, {name: round(score - expected, 6) for name, score in scores.items()}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_engine_score_and_predict_give_one_score(bundled_nr, photo, protocol, pipeline):
    engine = _engine(bundled_nr, protocol, pipeline)
    pil, uint8, unit = as_tensors(photo)
    expected = float(_engine(bundled_nr, protocol, "cpu").predict(unit[None]).score[0])
    results = engine.score([photo, pil, uint8, unit])
    assert all(r.error is None for r in results), [r.error for r in results]
    scores = dict(zip(("path", "PIL", "uint8", "float"), (r.score for r in results)))
    scores["predict float"] = float(engine.predict(unit[None]).score[0])
    scores["predict uint8"] = float(engine.predict(uint8[None], data_range=255.0).score[0])  # predict's data_range
    _assert_alike(scores, expected)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_bpclipscore_gives_the_score_of_the_file(bundled_nr, photo, pipeline, monkeypatch):
    from bpclip_plugins.torchmetrics import BPCLIPScore

    _, uint8, unit = as_tensors(photo)
    from_file = _engine(bundled_nr, "resize", "cpu").score(photo)[0].score
    scores = {}
    for name, images, white in (("float", unit, 1.0), ("uint8", uint8, 255.0), ("0..255 float", unit * 255, 255.0)):
        metric = BPCLIPScore(mode="nr", data_range=white, reduction="none", device="cpu")
        monkeypatch.setattr(metric._engine(), "pipeline", pipeline)  # the shared engine, restored after the test
        scores[name] = float(metric(images[None]).flatten()[0])
    _assert_alike(scores, from_file)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pyiqa_gives_one_score_for_a_path_a_pil_image_and_a_tensor(bundled_nr, photo, protocol, pipeline, monkeypatch):
    import pyiqa

    import bpclip_plugins  # noqa: F401  (registers BPCLIP with pyiqa)

    metric = pyiqa.create_metric("bpclip", device="cpu", protocol=protocol)
    monkeypatch.setattr(metric.net.engine, "pipeline", pipeline)
    pil, _, unit = as_tensors(photo)
    expected = _engine(bundled_nr, protocol, "cpu").score(unit)[0].score
    scores = {"path": metric(str(photo)).item(), "PIL": metric(pil).item(), "float": metric(unit[None]).item()}
    _assert_alike(scores, expected)


@pytest.mark.parametrize(("protocol", "pipeline"), [("resize", "cpu"), ("crops", "device")])
def test_the_command_scores_the_file_as_its_pixels(bundled_nr, photo, protocol, pipeline, capsys):
    from bpclip_core.cli import main

    args = ["score", "--no-progress", "--format", "json", "--workers", "0", "--protocol", protocol]
    assert main([*args, "--pipeline", pipeline, str(photo)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    expected = _engine(bundled_nr, protocol, "cpu").score(as_tensors(photo)[2])[0].score
    assert abs(row["score"] - expected) <= TOLERANCE


@pytest.mark.parametrize(("pipeline", "decoder"), [("cpu", "auto"), ("device", "pil"), ("device", "torchvision")])
def test_a_photo_big_enough_to_be_reduced_still_scores_as_its_pixels(bundled_nr, tmp_path, pipeline, decoder):
    path = tmp_path / "big.jpg"
    photo_like(4400, 3600, seed=1).save(path, quality=90)
    engine = _engine(bundled_nr, "resize", pipeline, jpeg_decoder=decoder)
    assert reduction_factor(4400, 3600, engine.protocol.decode_short_side) == 2  # under 16 MP: torchvision takes it
    from_file = engine.score(path)[0].score
    expected = float(_engine(bundled_nr, "resize", "cpu").predict(as_tensors(path)[2][None]).score[0])
    assert abs(from_file - expected) <= TOLERANCE, from_file - expected


def test_protocols_reduce_files_only_to_the_margin():
    assert TestTimeProtocol("resize", size=224).decode_short_side == REDUCTION_MARGIN * 224
    assert TestTimeProtocol("crops", size=224).decode_short_side == REDUCTION_MARGIN * 448
    assert TestTimeProtocol("full").decode_short_side is None


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp"])
def test_files_of_one_size_decode_to_one_size_whatever_their_format(tmp_path, fmt):
    picture = photo_like(300, 260)
    picture.save(tmp_path / "x.jpg")
    picture.save(tmp_path / f"x.{fmt}", **({"lossless": True} if fmt == "webp" else {}))
    for short in (32, 64, 100, 200):  # factors 8, 4, 2, 1
        jpeg, other = load_image(tmp_path / "x.jpg", short), load_image(tmp_path / f"x.{fmt}", short)
        factor = reduction_factor(300, 260, short)
        assert jpeg.shape == other.shape == (3, -(-260 // factor), -(-300 // factor)), short


def test_multiples_of_eight_are_drafted_then_boxed(tmp_path):
    photo_like(1000, 900).save(tmp_path / "x.jpg")
    assert reduction_factor(1000, 900, 30) == 24  # 1/8 in the IDCT, then a box of 3
    assert load_image(tmp_path / "x.jpg", 30).shape == (3, 38, 42)
