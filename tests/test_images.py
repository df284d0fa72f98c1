import numpy as np
import pytest
import torch
from PIL import Image

from bpclip_core.images import ImageReadError, find_images, load_image, resize_short_side


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
