import numpy as np
import pytest
import torch
from PIL import Image

from bpclip_core.inputs.decoding import ImageReadError, find_images, load_image, resize_short_side


def _rgb(h=40, w=60):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_round_trip(tmp_path):
    array = _rgb()
    Image.fromarray(array).save(tmp_path / "x.png")
    tensor = load_image(tmp_path / "x.png")
    assert tensor.shape == (3, 40, 60) and tensor.dtype == torch.float32
    assert torch.allclose(tensor, torch.from_numpy(array).permute(2, 0, 1) / 255.0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(_rgb())
    if mode == "I;16":
        image = Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16))
        suffix = ".png"
    else:
        image = rgb.convert(mode)
        suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"x{suffix}"
    image.save(path)
    tensor = load_image(path)
    assert tensor.shape == (3, 40, 60)
    assert float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    if mode == "I;16":
        assert float(tensor.max()) == pytest.approx(1.0) and float(tensor.min()) == 0.0


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(_rgb(40, 60))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (3, 60, 40)


def test_unreadable_files_get_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(_rgb()).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="empty.jpg: is an empty file \\(0 bytes\\)"):  # not "not an image file"
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="not an image file"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "absent.jpg")


def test_resize_short_side_shrinks_only():
    image = torch.rand(3, 100, 200)
    assert resize_short_side(image, 50).shape == (3, 50, 100)
    assert resize_short_side(image, 400) is image
    assert resize_short_side(image, None) is image
    assert resize_short_side(image[None], 50).shape == (1, 3, 50, 100)


def test_find_images_expands_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_images([tmp_path, tmp_path / "explicit.bmp"])
    assert [p.name for p in found] == ["a.jpg", "b.png", "c.JPG", "explicit.bmp"]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16"])
def test_load_pixels_are_the_pixels_load_image_divides(tmp_path, mode):
    from bpclip_core.inputs.decoding import load_pixels

    image = Image.fromarray(_rgb(40, 60)).convert(mode) if mode != "I;16" else Image.fromarray(
        (np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16))  # fmt: skip
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    pixels, floats = load_pixels(path), load_image(path)
    if mode == "I;16":  # uint8 cannot hold 16 bits: float, as load_image gives it
        assert pixels.dtype == torch.float32 and torch.equal(pixels, floats)
    else:
        assert pixels.dtype == torch.uint8 and torch.equal(pixels.float() / 255, floats)


def test_jpegs_for_a_device_decoder(tmp_path):
    from bpclip_core.inputs.decoding import EncodedJPEG, load_pixels, load_pixels_or_jpeg

    rotated = Image.fromarray(_rgb(40, 60))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    Image.fromarray(_rgb(300, 260)).save(tmp_path / "big.jpg")
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(_rgb()).save(tmp_path / "x.png")
    data = (tmp_path / "big.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    encoded = load_pixels_or_jpeg(tmp_path / "rot.jpg")
    assert isinstance(encoded, EncodedJPEG) and encoded.orientation == 6 and encoded.reduce == 1
    assert encoded.data.numel() == (tmp_path / "rot.jpg").stat().st_size  # the file as it is, nothing decoded
    big = load_pixels_or_jpeg(tmp_path / "big.jpg", min_short_side=64)
    assert isinstance(big, EncodedJPEG) and big.reduce == 4  # PIL decodes it at 1/4 (75x65)
    assert load_pixels(tmp_path / "big.jpg", min_short_side=64).shape == (3, 75, 65)
    assert isinstance(load_pixels_or_jpeg(tmp_path / "rot.jpg", 32, reduced=False), EncodedJPEG)
    kept = load_pixels_or_jpeg(tmp_path / "big.jpg", min_short_side=64, reduced=False)  # PIL reduces it: PIL's
    assert torch.equal(kept, load_pixels(tmp_path / "big.jpg", min_short_side=64))
    for name in ("cmyk.jpg", "x.png"):  # what a device decoder would get wrong or cannot read: decoded here
        assert torch.equal(load_pixels_or_jpeg(tmp_path / name), load_pixels(tmp_path / name))
    with pytest.raises(ImageReadError, match="cut.jpg: cannot decode image"):  # truncated: PIL's verdict
        load_pixels_or_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="over the pixel limit of 1000 px"):
        load_pixels_or_jpeg(tmp_path / "rot.jpg", max_pixels=1000)


@pytest.mark.parametrize(("width", "height", "short"), [(1024, 768, 384), (1000, 700, 160), (4000, 3000, 384),
                                                        (300, 260, 64), (333, 129, 64), (640, 480, 384)])  # fmt: skip
def test_reduction_factor_is_pils_reduced_decoding(tmp_path, width, height, short):
    from bpclip_core.inputs.decoding import load_pixels, reduction_factor

    Image.new("RGB", (width, height), (90, 120, 30)).save(tmp_path / "x.jpg")
    factor = reduction_factor(width, height, short)
    expected = (3, -(-height // factor), -(-width // factor))
    assert load_pixels(tmp_path / "x.jpg", min_short_side=short).shape == expected


def test_orient_is_pils_exif_transpose_on_tensors():
    from bpclip_core.inputs.decoding import _apply_orientation, orient

    array = _rgb(5, 7)
    for orientation in range(1, 9):
        expected = np.asarray(_apply_orientation(Image.fromarray(array), orientation))
        got = orient(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
        assert got.shape == expected.shape and (got == expected).all(), orientation
