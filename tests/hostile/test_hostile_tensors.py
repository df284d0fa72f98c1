"""Tensors of every dtype in every Python front end: floats scored as float32, the rest refused clearly."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from bpclip_core import InputError
from bpclip_core.inputs.decoding import ImageReadError
from bpclip_core.running.engine import QualityEngine, load_quality_model
from bpclip_plugins.torchmetrics import BPCLIPScore, bpclip_score

REFUSED = {  # a batch that no image is, and what its error must say
    "complex": (lambda x: x.to(torch.complex64), "complex dtype torch.complex64"),
    "bool": (lambda x: x > 0.5, "dtype torch.bool"),
    "meta": (lambda x: torch.empty(x.shape, device="meta"), "meta device holds no data"),
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")


@pytest.fixture(scope="module")
def engines(tiny_checkpoints) -> dict[str, QualityEngine]:
    model = load_quality_model(tiny_checkpoints["nr"])
    return {p: QualityEngine(model, attention="eager", num_workers=0, pipeline=p) for p in ("cpu", "device")}


def _pyiqa_metric(tiny_checkpoints, mode: str = "nr"):
    pyiqa = pytest.importorskip("pyiqa")
    import bpclip_plugins  # noqa: F401  (registers BPCLIP with pyiqa)

    name = "bpclip" if mode == "nr" else "bpclip_fr"
    return pyiqa.create_metric(name, checkpoint=str(tiny_checkpoints[mode]), device="cpu")


def _front_ends(engines, tiny_checkpoints):
    """Each Python front end as ``score(batch) -> (N,) scores``; a refused batch raises InputError."""
    path = tiny_checkpoints["nr"]

    def scored(batch):
        results = engines["cpu"].score(batch)
        errors = [r.error for r in results if r.error is not None]
        if errors:
            raise InputError(errors[0])
        return torch.tensor([r.score for r in results])

    def metric(batch):
        m = BPCLIPScore(checkpoint=path, reduction="none")
        m.update(batch)
        return m.compute()

    return {
        "predict": lambda batch: engines["cpu"].predict(batch).score,
        "predict on the device pipeline": lambda batch: engines["device"].predict(batch).score,
        "score": scored,
        "BPCLIPScore": metric,
        "bpclip_score": lambda batch: bpclip_score(batch, checkpoint=path, reduction="none"),
        "bpclip_score (min, max)": lambda batch: bpclip_score(
            batch, checkpoint=path, data_range=(0.0, 1.0), reduction="none"
        ),
    }


FRONT_ENDS = [
    "predict",
    "predict on the device pipeline",
    "score",
    "BPCLIPScore",
    "bpclip_score",
    "bpclip_score (min, max)",
]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_floating_dtypes_are_scored_as_float32(engines, tiny_checkpoints, images, front_end):
    score = _front_ends(engines, tiny_checkpoints)[front_end]
    expected = score(images)
    assert torch.allclose(score(images.double()), expected, atol=1e-5)
    for half in (torch.float16, torch.bfloat16):  # their own rounding of the pixels, then float32
        assert torch.allclose(score(images.to(half)), expected, atol=2e-2)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_tensors_without_image_data_are_refused_by_name(engines, tiny_checkpoints, images, front_end, case):
    make, phrase = REFUSED[case]
    with pytest.raises(InputError, match=phrase):
        _front_ends(engines, tiny_checkpoints)[front_end](make(images))


def test_uint8_tensors_mean_0_to_255_in_every_front_end(engines, tiny_checkpoints, images):
    # issue 29.4: predict and the metrics refused uint8 unless data_range=255 was given, while
    # score read it as 0..255; now uint8 is 0..255 everywhere (data_range is the floats' scale)
    quantised = (images * 255).round()
    pixels, expected = quantised.byte(), engines["cpu"].predict(quantised / 255).score
    scored = torch.tensor([r.score for r in engines["cpu"].score(pixels)])
    assert torch.allclose(scored, expected, atol=1e-5)
    for engine in engines.values():
        assert torch.allclose(engine.predict(pixels).score, expected, atol=1e-5)
        assert torch.allclose(engine.predict(pixels, data_range=255.0).score, expected, atol=1e-5)
    for data_range in (1.0, 255.0):
        metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], data_range=data_range, reduction="none")
        metric.update(pixels)
        assert torch.allclose(metric.compute(), expected, atol=1e-5)
    functional = bpclip_score(pixels, checkpoint=tiny_checkpoints["nr"], reduction="none")
    assert torch.allclose(functional, expected, atol=1e-5)
    with pytest.raises(InputError, match="data_range"):  # float 0..255 data still needs data_range
        BPCLIPScore(checkpoint=tiny_checkpoints["nr"]).update(quantised)


def test_pyiqa_tensors_of_every_dtype(tiny_checkpoints, images):
    metric = _pyiqa_metric(tiny_checkpoints)
    expected = metric(images)
    assert torch.allclose(metric(images.double()), expected, atol=1e-5)
    assert torch.allclose(metric(images.half()), expected, atol=2e-2)  # its white 1.0 failed pyiqa's own check
    with pytest.raises(InputError, match="empty batch"):
        metric(images[:0])
    for make, phrase in REFUSED.values():
        with pytest.raises(InputError, match=phrase):
            metric(make(images))


def _write_pngs(folder, batch: torch.Tensor, sizes=None) -> list[str]:
    paths = []
    for i, image in enumerate((batch * 255).round().byte()):
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        if sizes is not None:
            picture = picture.resize(sizes[i])
        paths.append(str(folder / f"{i}.png"))
        picture.save(paths[-1])
    return paths


def test_pyiqa_lists_score_like_one_call_each(tiny_checkpoints, images, tmp_path):
    metric = _pyiqa_metric(tiny_checkpoints)
    paths = _write_pngs(tmp_path, images)
    one_by_one = torch.cat([metric(p) for p in paths])
    assert one_by_one.shape == (2, 1)
    assert torch.allclose(metric(paths), one_by_one, atol=1e-5)
    assert torch.allclose(metric([images[0], images[1:]]), metric(images), atol=1e-5)
    assert torch.allclose(metric(tuple(images)), metric(images), atol=1e-5)
    fr = _pyiqa_metric(tiny_checkpoints, "fr")
    pairs = torch.cat([fr(p, q) for p, q in zip(paths, paths[::-1])])
    assert torch.allclose(fr(paths, paths[::-1]), pairs, atol=1e-5)


def test_pyiqa_lists_that_cannot_be_scored_say_what_to_pass(tiny_checkpoints, images, tmp_path):
    metric = _pyiqa_metric(tiny_checkpoints)
    paths = _write_pngs(tmp_path, images, sizes=[(64, 64), (80, 64)])
    missing = str(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="missing.png"):
        metric([paths[0], missing])
    with pytest.raises(
        InputError, match=r"same size: .*0\.png is 64x64 px, .*1\.png is 80x64 px; call the metric once"
    ):
        metric(paths)
    with pytest.raises(InputError, match="empty list"):
        metric([])
    with pytest.raises(InputError, match="item 1 of the list is a int: .*image paths or"):
        metric([paths[0], 3])
