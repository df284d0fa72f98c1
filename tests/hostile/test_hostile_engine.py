"""The engine and the decoder on hostile inputs: every bad one is its own error, the rest scored."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import bpclip_core.inputs.loading as loading_module
from bpclip_core import InputError
from bpclip_core.errors import DeviceError
from bpclip_core.inputs.decoding import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageReadError, load_image
from bpclip_core.running.engine import QualityEngine

from .corpus import png_claiming_size


def test_every_corpus_case_gets_its_own_result(nr_model, corpus, no_hang):
    folder, cases = corpus
    results = QualityEngine(nr_model, attention="eager", num_workers=1, batch_size=4).score(folder)
    by_name = {os.path.basename(r.path): r for r in results}
    assert set(by_name) == set(cases)  # nothing dropped: a FIFO, a folder named sub.jpg, .jfif/.avif
    for name, case in cases.items():
        result = by_name[name]
        if case.error is None:
            assert result.error is None and np.isfinite(result.score), (name, result.error)
        else:
            assert result.score is None and case.error in result.error and name in result.error, (name, result.error)


def test_explicit_fifo_and_folder_named_like_an_image(nr_model, tmp_path, write_random_images, no_hang):
    write_random_images(tmp_path, ["good.png"], 64, 64)
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "empty.jpg").mkdir()
    sources = [tmp_path / "pipe.jpg", tmp_path / "empty.jpg", tmp_path / "good.png"]
    results = QualityEngine(nr_model, attention="eager", num_workers=0).score(sources)
    assert "FIFO" in results[0].error and "folder with no image files" in results[1].error
    assert results[2].error is None
    with pytest.raises(ImageReadError, match="is a folder"):
        load_image(tmp_path / "empty.jpg")


def test_pixel_limit_is_checked_from_the_header_and_configurable(nr_model, tmp_path, monkeypatch, write_random_images):
    write_random_images(tmp_path, ["small.png"], 70, 90)
    # 1000x1000 claimed, 40x40 stored: decoding would fail as truncated, the limit says so first
    png_claiming_size(tmp_path / "claims.png", 1000, 1000)
    with pytest.raises(ImageReadError, match="over the pixel limit of 500000 px"):
        load_image(tmp_path / "claims.png", max_pixels=500_000)
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        load_image(tmp_path / "claims.png")  # under the default limit: decoded, and found broken
    engine = QualityEngine(nr_model, attention="eager", num_workers=0, max_pixels=6000)
    small, claims = engine.score([tmp_path / "small.png", tmp_path / "claims.png"])
    assert "pixel limit of 6000 px" in small.error and "pixel limit" in claims.error
    monkeypatch.setenv(MAX_PIXELS_ENV, "7000")
    assert QualityEngine(nr_model, num_workers=0).max_pixels == 7000
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=MAX_PIXELS_ENV):
        QualityEngine(nr_model, num_workers=0)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert QualityEngine(nr_model, num_workers=0).max_pixels == DEFAULT_MAX_PIXELS


def test_full_protocol_limit_is_checked_before_decoding(nr_model, tmp_path):
    png_claiming_size(tmp_path / "big.png", 5000, 4000)  # 20 MP: over the 'full' protocol's 16 MP
    engine = QualityEngine(nr_model, attention="eager", num_workers=0, protocol="full")
    assert "pixel limit of 16000000 px" in engine.score(tmp_path / "big.png")[0].error


def test_any_decoder_exception_is_that_inputs_error(nr_model, tmp_path, monkeypatch, write_random_images):
    write_random_images(tmp_path, ["a.png", "b.png"], 64, 64)
    real = loading_module.load_image

    def flaky(path, *args, **kwargs):
        if str(path).endswith("a.png"):
            raise KeyError("a decoder bug")  # not an OSError/ValueError/RuntimeError
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loading_module, "load_image", flaky)
    a, b = QualityEngine(nr_model, attention="eager", num_workers=0).score(tmp_path)
    assert "KeyError" in a.error and "a decoder bug" in a.error and b.error is None


def test_big_png_is_reduced_while_decoding(tmp_path):
    Image.new("L", (5000, 4000), 128).save(tmp_path / "big.png")  # 20 MP, over REDUCE_ABOVE_PIXELS
    reduced = load_image(tmp_path / "big.png", min_short_side=384)
    assert reduced.shape == (3, 500, 625)  # box-reduced by 8 (as a JPEG would be) in 8-bit mode: no 20 MP float copy
    assert torch.allclose(reduced, torch.full_like(reduced, 128 / 255))
    exif_image = Image.new("RGB", (5000, 4000), (10, 20, 30))
    exif = exif_image.getexif()
    exif[0x0112] = 6
    exif_image.save(tmp_path / "rotated.png", exif=exif)
    assert load_image(tmp_path / "rotated.png", min_short_side=384).shape == (3, 625, 500)


def test_float_and_integer_modes_are_not_black(tmp_path):
    from .corpus import float_tiff, int32_tiff, sixteen_bit_png

    ramp = load_image(float_tiff(tmp_path / "f.tif"))
    assert float(ramp.max()) == pytest.approx(1.0) and float(ramp.mean()) == pytest.approx(0.5, abs=1e-3)
    dark = load_image(sixteen_bit_png(tmp_path / "d.png"))
    assert float(dark.max()) == pytest.approx(200 / 65535)  # 16-bit: divided by 65535, not 255
    wide = load_image(int32_tiff(tmp_path / "i.tif", max_sample_value=65535))
    assert float(wide.max()) == pytest.approx(1.0)
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        load_image(float_tiff(tmp_path / "bright.tif", 0, 2))


def test_in_memory_inputs_of_every_dtype(nr_model, write_random_images, tmp_path):
    write_random_images(tmp_path, ["x.png"], 64, 64)
    array = np.array(Image.open(tmp_path / "x.png"))
    unit = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    engine = QualityEngine(nr_model, attention="eager", num_workers=0)
    expected = engine.score(unit)[0].score
    same = [
        unit.double(),  # float64: cast
        torch.from_numpy(array).permute(2, 0, 1).contiguous(),  # uint8 tensor: like a uint8 array
        array.astype(np.float64) / 255,
        array,
    ]
    for result in engine.score(same):
        assert result.error is None and result.score == pytest.approx(expected, abs=1e-5)
    scaled = engine.score([unit * 255, array.astype(np.float32)], data_range=255.0)
    assert all(r.score == pytest.approx(expected, abs=1e-5) for r in scaled)
    odd = [
        unit.to(torch.complex64),
        torch.empty(3, 64, 64, device="meta"),
        b"\x89PNG...",
        array.astype(object),
        array > 0,
        unit * 255,  # 0..255 floats without data_range: refused, not clipped
    ]
    errors = [r.error for r in engine.score(odd)]
    assert "complex" in errors[0] and "meta" in errors[1] and "io.BytesIO" in errors[2]
    assert "dtype object" in errors[3] and "dtype bool" in errors[4] and "data_range" in errors[5]
    (top_level_bytes,) = engine.score(b"not an image")  # a single odd object is one input, not iterated
    assert "bytes" in top_level_bytes.error
    (top_level_dict,) = engine.score({"path": "x.png"})
    assert "dict" in top_level_dict.error


def test_non_finite_scores_are_errors(model_factory):
    model = model_factory("nr")
    with torch.no_grad():
        for parameter in model.regressor.parameters():
            parameter.fill_(float("nan"))
    engine = QualityEngine(model, attention="eager", num_workers=0)
    (result,) = engine.score(torch.rand(3, 64, 64))
    assert result.score is None and "non-finite score" in result.error


def test_devices_are_checked(nr_model):
    with pytest.raises(DeviceError, match="unknown device 'foo'"):
        QualityEngine(nr_model, device="foo")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            QualityEngine(nr_model, device="cuda")
    assert isinstance(DeviceError("x"), ValueError)


def test_a_12000px_grey_png_is_scored_in_bounded_memory(tmp_path):
    import subprocess
    import sys
    import textwrap

    Image.new("L", (12000, 12000), 90).save(tmp_path / "grey.png")  # 144 MP, about 170 KB on disk
    script = textwrap.dedent(f"""
        import resource
        from bpclip_core.inputs.decoding import load_image
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = load_image({str(tmp_path / "grey.png")!r}, min_short_side=384)
        print(image.shape[1], image.shape[2], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    height, width, peak_mb = map(int, run.stdout.split())
    assert (height, width) == (500, 500)  # box-reduced by 24 (a multiple of 8, as for a JPEG) while in 8-bit grey
    assert peak_mb < 600, f"decoding took {peak_mb} MB (a full-size float RGB copy alone is 1.7 GB)"


def test_32_bit_integer_images_are_scaled_by_their_declared_white_never_by_a_guess(tmp_path):
    from .corpus import int32_tiff

    # two copies of one picture, one x5 in value: as bright as declared, never rescaled to look alike
    dim = load_image(int32_tiff(tmp_path / "dim.tif", peak=10_000, max_sample_value=60_000))
    bright = load_image(int32_tiff(tmp_path / "bright.tif", peak=50_000, max_sample_value=60_000))
    assert float(bright.max()) == pytest.approx(5 * float(dim.max()), rel=1e-4)
    assert float(bright.max()) == pytest.approx(50_000 / 60_000, rel=1e-4)
    for peak in (10_000, 100_000):  # no white level declared: refused, whatever the pixel maximum
        with pytest.raises(ImageReadError, match="32-bit integer image with no declared white level"):
            load_image(int32_tiff(tmp_path / f"undeclared{peak}.tif", peak=peak))
    with pytest.raises(ImageReadError, match="above its declared white"):
        load_image(int32_tiff(tmp_path / "over.tif", peak=70_000, max_sample_value=65535))


def test_max_pixels_above_pils_own_limit_takes_effect(tmp_path):
    from .corpus import png_claiming_size

    # 15000 x 13000 = 195 MP: over PIL's 179 MP decompression-bomb limit, under ours when raised
    claimed = png_claiming_size(tmp_path / "big.png", 15000, 13000)
    with pytest.raises(ImageReadError, match="over the pixel limit of 150000000 px"):
        load_image(claimed)
    with pytest.raises(ImageReadError) as raised:
        load_image(claimed, max_pixels=200_000_000)
    assert "pixel limit" not in str(raised.value) and "cannot decode" in str(raised.value)  # PIL's limit is off


def test_long_strips_are_refused_from_the_header(tmp_path, monkeypatch):
    from .corpus import png_claiming_size

    strip = png_claiming_size(tmp_path / "strip.png", 32, 4_000_000)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda *_: pytest.fail("decoded before the check"))
    with pytest.raises(ImageReadError, match=r"strip.png: image is 32x4000000 px: its long side is 125000 times"):
        load_image(strip)


def test_long_tensors_are_refused_before_the_network(nr_model):
    engine = QualityEngine(nr_model, attention="eager", num_workers=0)
    strip = torch.zeros(1, 3, 32, 32 * 40)  # 40:1, over the limit of 32:1
    with pytest.raises(InputError, match="its long side is 40 times its short side"):
        engine.predict(strip)
    [result] = engine.score(strip)
    assert "40 times its short side" in result.error
    assert engine.predict(torch.zeros(1, 3, 32, 32 * 32)).score.shape == (1,)  # 32:1 still scores
