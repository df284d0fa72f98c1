"""Reading image files into tensors, and the test-time resize protocol."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})


class ImageReadError(InputError):
    """An image file could not be read or decoded."""


def load_image(path: str | Path, min_short_side: int | None = None) -> torch.Tensor:
    """Read an image file as a (3, H, W) float tensor in [0, 1].

    Applies the EXIF orientation and converts grayscale, palette, RGBA (alpha dropped),
    CMYK and 16-bit images to 8-bit-equivalent RGB. With ``min_short_side``, JPEGs are
    decoded at a reduced scale (1/2 .. 1/8) that keeps the short side at least that long:
    a 6000x4000 photo to be shrunk anyway never exists at full size in memory.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as opened:
            if min_short_side is not None and opened.format == "JPEG":
                scale = min(opened.size) / min_short_side
                if scale >= 2:
                    opened.draft("RGB", (int(opened.size[0] / scale), int(opened.size[1] / scale)))
            image = ImageOps.exif_transpose(opened)
            image.load()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image file PIL can decode") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot decode image (corrupt or truncated?): {exc}") from exc
    return pil_to_tensor(image)


def pil_to_tensor(image) -> torch.Tensor:
    """A PIL image of any mode as a (3, H, W) float RGB tensor in [0, 1]."""
    if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(array) / peak).clamp_(0, 1)
        return tensor.unsqueeze(0).repeat(3, 1, 1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_short_side(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Test-time protocol: shrink so the short side is ``size`` (never enlarge); None keeps it."""
    if size is None:
        return image
    height, width = image.shape[-2:]
    short = min(height, width)
    if short <= size:
        return image
    scale = size / short
    new = (max(round(height * scale), 1), max(round(width * scale), 1))
    batch = image.unsqueeze(0) if image.ndim == 3 else image
    out = F.interpolate(batch, size=new, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return out[0] if image.ndim == 3 else out


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted list of image files."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found
