"""Input preparation: the device pipeline (uint8 off the CPU, views on the device) against the CPU one.

Everything runs on the CPU: ``pipeline="device"`` works on any device, without nvjpeg there,
so these tests exercise the uint8 path, the device-side checks and, with
``jpeg_decoder="torchvision"``, the batched JPEG decoding with its fallback to PIL. Measured
here: the PIL-decoded device pipeline gives the CPU pipeline's scores exactly (the same
pixels and the same arithmetic); torchvision's JPEG decoder differs by at most 5e-6 (its own
IDCT, and full-scale decoding where PIL decodes at a reduced scale).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import bpclip_core.inputs.device_pipeline as device_pipeline
from bpclip_core import InputError
from bpclip_core.inputs.device_pipeline import OnDevice, on_device
from bpclip_core.inputs.loading import error_text, expand_inputs, input_label
from bpclip_core.running.engine import QualityEngine
from hostile.corpus import build_image_corpus, sixteen_bit_png

TOLERANCE = {"pil": 1e-5, "torchvision": 1e-4}  # on scores in [0, 1]; measured 0 and 5e-6


def _rgb(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth random picture with some grain: closer to a photo than pure noise, for which
    any two JPEG decoders disagree wildly (their chroma upsampling above all)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + grain, 0, 255).astype(np.uint8))


@pytest.fixture
def mixed_files(tmp_path):
    """One file of each kind the device pipeline must decode as the CPU pipeline does."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    _rgb(70, 90, 1).save(folder / "plain.png")
    _rgb(200, 150, 2).save(folder / "photo.jpg", quality=90)
    _rgb(300, 260, 3).save(folder / "reduced.jpg", quality=85)  # short side >= 2 x 64: PIL decodes at 1/2 scale
    rotated = _rgb(80, 120, 4)
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    rotated.save(folder / "rotated.jpg", exif=exif)
    _rgb(70, 90, 5).convert("L").save(folder / "grey.png")
    _rgb(70, 90, 6).convert("L").save(folder / "grey.jpg")
    _rgb(70, 90, 7).convert("RGBA").save(folder / "alpha.png")
    _rgb(70, 90, 8).convert("P").save(folder / "palette.png")
    _rgb(70, 90, 9).convert("CMYK").save(folder / "cmyk.jpg")
    _rgb(100, 90, 10).save(folder / "progressive.jpg", progressive=True)
    sixteen_bit_png(folder / "sixteen.png")
    return folder


def _scores(results) -> dict[str, tuple[float | None, str | None]]:
    return {os.path.basename(r.path): (r.score, r.error) for r in results}


def _engine(model, **options) -> QualityEngine:
    return QualityEngine(model, **{"device": "cpu", "attention": "eager", "batch_size": 3, **options})


@pytest.mark.parametrize("protocol", ["resize", "crops"])
@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_device_pipeline_scores_files_as_the_cpu_pipeline_does(nr_model, mixed_files, protocol, decoder):
    expected = _scores(_engine(nr_model, protocol=protocol, num_workers=0).score(mixed_files))
    workers = 1 if protocol == "crops" else 0  # the workers' items (EncodedJPEG too) travel between processes
    engine = _engine(nr_model, protocol=protocol, num_workers=workers, pipeline="device", jpeg_decoder=decoder)
    assert engine.pipeline == "device"
    got = _scores(engine.score(mixed_files))
    assert set(got) == set(expected) and all(error is None for _, error in got.values())
    worst = max(abs(got[name][0] - score) for name, (score, _) in expected.items())
    assert worst <= TOLERANCE[decoder], worst


def _views(dataset_type, protocol, paths, **options):
    """The views each pipeline gives the model for ``paths`` (NR), in order."""
    from bpclip_core.inputs.device_pipeline import DecodedInputs, DeviceViews
    from bpclip_core.inputs.loading import PreparedViews
    from bpclip_core.inputs.protocol import TestTimeProtocol

    protocol = TestTimeProtocol(protocol, size=64)
    dataset = dataset_type(list(paths), [None] * len(paths), protocol, False, **options)
    chunk = [dataset[i] for i in range(len(paths))]
    if dataset_type is DecodedInputs:
        chunk = DeviceViews(dataset, list(paths), [None] * len(paths), torch.device("cpu"))(chunk)
    assert all(error is None for *_, error in chunk), chunk
    return [views for _, views, _, _ in chunk], PreparedViews, DecodedInputs


def test_the_model_sees_the_same_pixels_from_both_pipelines(tmp_path, mixed_files):
    from bpclip_core.inputs.device_pipeline import DecodedInputs
    from bpclip_core.inputs.loading import PreparedViews

    paths = sorted(mixed_files.iterdir())
    cpu, *_ = _views(PreparedViews, "resize", paths)
    for device_jpeg in ("none", "full-scale", "all"):
        device, *_ = _views(DecodedInputs, "resize", paths, device_jpeg=device_jpeg)
        for path, a, b in zip(paths, cpu, device):
            assert a.shape == b.shape, path.name  # e.g. rotated.jpg: 80x120 stored, shown 120x80
            difference = (a - b).abs()
            if device_jpeg == "none":
                assert float(difference.max()) == 0, path.name  # the same pixels, the same arithmetic
            elif device_jpeg == "full-scale":  # torchvision's decoder where PIL decodes at full scale
                assert float(difference.max()) <= 1 / 255, path.name  # measured 0 here: both libjpeg-turbo
            else:  # and a box for PIL's reduced decoding: measured 0.44 levels mean, 3.2 max
                assert float(difference.mean()) <= 1 / 255 and float(difference.max()) <= 8 / 255, path.name
    rotated = paths.index(mixed_files / "rotated.jpg")
    assert cpu[rotated].shape[-2:] == (96, 64)  # the orientation applied: stored 120 wide, 80 high


def test_hostile_files_stay_their_own_errors(nr_model, tmp_path):
    cases = build_image_corpus(tmp_path / "corpus")
    for decoder in ("pil", "torchvision"):
        engine = _engine(nr_model, num_workers=1, batch_size=4, pipeline="device", jpeg_decoder=decoder)
        by_name = {os.path.basename(r.path): r for r in engine.score(tmp_path / "corpus")}
        assert set(by_name) == set(cases)
        for name, case in cases.items():
            result = by_name[name]
            if case.error is None:
                assert result.error is None and np.isfinite(result.score), (decoder, name, result.error)
            else:
                assert result.score is None and case.error in result.error and name in result.error, (name, result)


def test_a_jpeg_the_device_decoder_refuses_is_decoded_by_pil(nr_model, mixed_files, monkeypatch):
    import torchvision.io

    real = torchvision.io.decode_jpeg
    refused = []

    def picky(data, *args, **kwargs):  # refuses one file, so a batch with it fails as a whole
        batch = data if isinstance(data, list) else [data]
        if any(d.numel() == (mixed_files / "photo.jpg").stat().st_size for d in batch):
            refused.append(len(batch))
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    (mixed_files / "truncated.jpg").write_bytes((mixed_files / "photo.jpg").read_bytes()[:600] + b"\xff\xd9")
    expected = _scores(_engine(nr_model, num_workers=0).score(mixed_files))
    got = _scores(_engine(nr_model, num_workers=0, pipeline="device", jpeg_decoder="torchvision").score(mixed_files))
    assert refused and min(refused) == 1  # the batch failed, then the file alone
    assert got["photo.jpg"][0] == pytest.approx(expected["photo.jpg"][0], abs=TOLERANCE["pil"])  # PIL's pixels
    assert got["truncated.jpg"][0] is None and "truncated.jpg" in got["truncated.jpg"][1]
    assert got["truncated.jpg"][1] == expected["truncated.jpg"][1]  # PIL's own message, as on the CPU path


def test_full_reference_pairs_on_the_device(fr_model, tmp_path):
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    for folder in (dist, ref):
        folder.mkdir()
    for i in range(3):
        _rgb(64, 80, i).save(dist / f"img{i}.jpg", quality=80)
        _rgb(64, 80, i + 10).save(ref / f"img{i}.png")
    _rgb(50, 50, 3).save(ref / "img2.png")  # a partner of another size
    _rgb(64, 80, 4).save(dist / "alone.png")
    expected = _engine(fr_model, num_workers=0).score(dist, ref)
    got = _engine(fr_model, num_workers=1, pipeline="device", jpeg_decoder="torchvision").score(dist, ref)
    assert [r.error for r in got] == [r.error for r in expected]
    assert "no reference" in got[0].error and "same size" in got[3].error
    for a, b in zip(expected[1:3], got[1:3]):
        assert b.score == pytest.approx(a.score, abs=TOLERANCE["torchvision"])


def test_in_memory_inputs_are_checked_on_the_device(nr_model):
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    sources = [
        image,
        (image * 255).round().byte(),
        image.numpy().transpose(1, 2, 0),
        torch.full((3, 40, 40), float("nan")),
        image * 2,
        torch.rand(2, 64, 64),
        torch.rand(3, 20, 64),
        image.to(torch.complex64),
        {"not": "an image"},
    ]
    expected = _engine(nr_model, num_workers=0).score(sources)
    engine = _engine(nr_model, num_workers=0, pipeline="device")
    assert on_device(image, engine.device) and not on_device(image.numpy(), engine.device)
    got = engine.score(sources)
    assert [r.error for r in got] == [r.error for r in expected]
    assert "NaN" in got[3].error and "values must lie in" in got[4].error and "3 (RGB) channels" in got[5].error
    for a, b in zip(expected[:3], got[:3]):
        assert b.score == pytest.approx(a.score, abs=TOLERANCE["pil"])
    scaled = engine.score(image * 255, data_range=255.0)[0]
    assert scaled.score == pytest.approx(expected[0].score, abs=TOLERANCE["pil"])


def test_predict_on_the_device_pipeline(nr_model, fr_model, images):
    for model, refs in ((nr_model, None), (fr_model, images.flip(-1))):
        expected = _engine(model).predict(images, refs)
        got = _engine(model, pipeline="device", batch_size=1).predict(images, refs)
        assert torch.allclose(got.score, expected.score, atol=TOLERANCE["pil"])
        assert torch.allclose(got.level_probabilities, expected.level_probabilities, atol=TOLERANCE["pil"])
    engine = _engine(nr_model, pipeline="device")
    scaled = engine.predict((images * 255).round().byte(), data_range=255.0).score  # uint8 goes to the device as is
    assert torch.allclose(scaled, _engine(nr_model).predict((images * 255).round() / 255).score, atol=TOLERANCE["pil"])
    bad = images.clone()
    bad[1, 0, 3, 3] = float("inf")
    for wrong, phrase in ((bad, "images contains NaN or Inf"), (images * 2, "images values must lie in")):
        with pytest.raises(InputError, match=phrase) as on_device:
            engine.predict(wrong)
        with pytest.raises(InputError) as on_cpu:
            _engine(nr_model).predict(wrong)
        assert str(on_device.value) == str(on_cpu.value)  # the same message, from statistics made on the device
    with pytest.raises(InputError, match="same shape"):
        _engine(fr_model, pipeline="device").predict(images, images[:1])


def test_one_batch_in_flight_keeps_order_and_results(nr_model, mixed_files, monkeypatch):
    expected = _scores(_engine(nr_model, num_workers=0, batch_size=2).score(mixed_files))
    engine = _engine(nr_model, num_workers=0, batch_size=2, pipeline="device")
    monkeypatch.setattr(engine, "_batches_in_flight", lambda: 1)  # as on a GPU: read back one batch late
    chunks = list(engine.iter_scores(mixed_files))
    indices = [index for _, chunk in chunks for index, _ in chunk]
    assert indices == list(range(len(expected))) and all(len(chunk) <= 2 for _, chunk in chunks)
    got = _scores(result for _, chunk in chunks for _, result in chunk)
    assert all(got[name][0] == pytest.approx(score, abs=TOLERANCE["pil"]) for name, (score, _) in expected.items())


def test_pipeline_options(nr_model):
    assert _engine(nr_model).pipeline == "cpu"  # the CPU path stays the default without a GPU
    with pytest.raises(ValueError, match="pipeline must be one of"):
        _engine(nr_model, pipeline="gpu")
    with pytest.raises(ValueError, match="needs the device pipeline"):
        _engine(nr_model, jpeg_decoder="torchvision")


def test_sources_labels_and_errors():
    assert len(expand_inputs(torch.rand(4, 3, 32, 32))) == 4 and len(expand_inputs(b"bytes")) == 1
    assert input_label("a/b.png", 3) == "a/b.png" and input_label(np.zeros(1), 3) == "<ndarray #3>"
    assert error_text(InputError("plain")) == "plain" and error_text(KeyError("k")) == "KeyError: 'k'"
    assert isinstance(OnDevice(), OnDevice)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
def test_nvjpeg_on_cuda_scores_as_the_cpu_pipeline(nr_model, mixed_files):
    expected = _scores(QualityEngine(nr_model, device="cpu", attention="eager").score(mixed_files))
    engine = QualityEngine(nr_model, device="cuda", precision="fp32", attention="eager", batch_size=4)
    nvjpeg = device_pipeline.device_decodes_jpeg(engine.device)
    assert engine.pipeline == "device" and engine._device_jpeg() == ("full-scale" if nvjpeg else "none")
    got = _scores(engine.score(mixed_files))
    for name, (score, _) in expected.items():
        torch.testing.assert_close(got[name][0], score, atol=1e-3, rtol=0)
    on_gpu = torch.rand(3, 64, 64, device="cuda")
    on_gpu[0, 0, 0] = float("nan")
    assert "NaN" in engine.score(on_gpu)[0].error
