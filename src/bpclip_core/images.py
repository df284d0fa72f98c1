"""Reading image files into tensors, and the test-time resize protocol.

Every file is checked before it is decoded: it must be a regular file (a FIFO named
``x.jpg`` would block the reader forever), and the size its header declares must be within
the pixel limit (:func:`default_max_pixels`, ``BPCLIP_MAX_PIXELS``). Anything that goes
wrong while decoding one file becomes an :class:`ImageReadError` naming that file.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".avif"}
)
MAX_PIXELS_ENV = "BPCLIP_MAX_PIXELS"
# 150 MP: a 12000x12000 scan still decodes; PIL's own decompression-bomb error starts at 179 MP.
DEFAULT_MAX_PIXELS = 150_000_000
# Above this many pixels an image that will be shrunk anyway is box-reduced right after
# decoding, in its own (8- or 16-bit) mode, so the float RGB copy never exists at full size.
REDUCE_ABOVE_PIXELS = 4096 * 4096
_ORIENTATION_TAG = 0x0112


class ImageReadError(InputError):
    """An image file could not be read or decoded."""


def default_max_pixels() -> int:
    """The pixel limit of decoded images: ``$BPCLIP_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels") from None
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {text!r}")
    return value


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: str | Path):
    """Open ``path`` for binary reading, refusing anything but a regular file.

    The file is opened without blocking and checked on the open descriptor, so a FIFO is
    refused instead of waiting forever for a writer, and no rename can slip in between. An
    empty (zero-byte) file is refused too, saying so.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{path}: is a folder, not an image file") from exc
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{path}: is {file_kind(info.st_mode)}, not an image file")
        if info.st_size == 0:
            raise ImageReadError(f"{path}: is an empty file (0 bytes), not an image")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_image(path: str | Path, min_short_side: int | None = None, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file as a (3, H, W) float tensor in [0, 1].

    Applies the EXIF orientation and converts grayscale, palette, RGBA (alpha dropped),
    CMYK, 16-bit and float images to RGB in [0, 1]. With ``min_short_side``, JPEGs are
    decoded at a reduced scale (1/2 .. 1/8) that keeps the short side at least that long:
    a 6000x4000 photo to be shrunk anyway never exists at full size in memory; other big
    images (over :data:`REDUCE_ABOVE_PIXELS`) are box-reduced in their own mode right after
    decoding.

    Raises:
        ImageReadError: missing, not a regular file, over ``max_pixels`` (default
            :func:`default_max_pixels`, checked from the header before decoding), or not
            decodable; the message names the file.
    """
    return pixels_to_float(load_pixels(path, min_short_side, max_pixels))


def load_pixels(path: str | Path, min_short_side: int | None = None, max_pixels: int | None = None) -> torch.Tensor:
    """:func:`load_image` before the float conversion: 8-bit images as (3, H, W) uint8.

    The pixels are those :func:`load_image` divides by 255 (same reduced decoding, same
    orientation); 16-bit, 32-bit integer and float images, which uint8 cannot hold, come as
    float (3, H, W) in [0, 1]. Raises :class:`ImageReadError` as :func:`load_image` does.
    """
    path = Path(path)
    with _decoding(path), open_regular_file(path) as handle:
        return _decode(handle, path, min_short_side, max_pixels)


@dataclass(frozen=True)
class EncodedJPEG:
    """A JPEG file's bytes, for a batched decoder on the device, with what :func:`load_image`
    would do after decoding: its EXIF orientation and the factor of its reduced decoding
    (:func:`jpeg_draft_scale`), for the device to reproduce (a box reduction, then the orientation)."""

    data: torch.Tensor  # (num_bytes,) uint8
    orientation: int = 1
    reduce: int = 1


def jpeg_draft_scale(width: int, height: int, min_short_side: int | None) -> int:
    """The factor (1, 2, 4 or 8) by which :func:`load_image` decodes a ``width`` x ``height``
    JPEG to keep ``min_short_side``: PIL's ``draft`` of the size requested in ``_decode``."""
    if min_short_side is None or min(width, height) / min_short_side < 2:
        return 1
    scale = min(width, height) / min_short_side
    factor = min(width // int(width / scale), height // int(height / scale))
    return next(s for s in (8, 4, 2, 1) if factor >= s)


def load_pixels_or_jpeg(
    path: str | Path, min_short_side: int | None = None, max_pixels: int | None = None, reduced: bool = True
) -> torch.Tensor | EncodedJPEG:
    """A JPEG that a device decoder can take as it is, else :func:`load_pixels`.

    Taken as it is (one read, header checked, nothing decoded): a YCbCr or grayscale JPEG
    of at most :data:`REDUCE_ABOVE_PIXELS` that ends with its end-of-image marker (a
    truncated file goes to PIL, which reports it), and with ``reduced=False`` only one that
    :func:`load_image` decodes at full scale; the pixel limit is checked from the header
    first. Anything else (CMYK, Adobe RGB-coded, huge, truncated, other formats) is decoded
    here, from the bytes already read.
    """
    from PIL import Image

    path = Path(path)
    with _decoding(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        with open_regular_file(path) as handle:
            data = handle.read()
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            _check_pixel_limit(path, width, height, max_pixels)
            plain = opened.mode == "L" or (opened.mode == "RGB" and opened.info.get("adobe_transform", 1) != 0)
            complete = data.rstrip(b"\0").endswith(b"\xff\xd9")  # ends with its end-of-image marker
            reduce = jpeg_draft_scale(width, height, min_short_side)
            wanted = opened.format == "JPEG" and plain and complete and (reduced or reduce == 1)
            if wanted and width * height <= REDUCE_ABOVE_PIXELS:
                return EncodedJPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), _orientation(opened), reduce)
        return _decode(io.BytesIO(data), path, min_short_side, max_pixels)


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded pixels as float in [0, 1]: uint8 divided by 255 (float pixels are returned as they are)."""
    return pixels.float().div_(255.0) if pixels.dtype == torch.uint8 else pixels


def _check_pixel_limit(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if width * height > limit:
        raise ImageReadError(
            f"{path}: image is {width}x{height} = {width * height} px, over the pixel limit of "
            f"{limit} px (raise it with --max-pixels or {MAX_PIXELS_ENV}, or shrink the file)"
        )


def _decode(handle, path: Path, min_short_side: int | None, max_pixels: int | None) -> torch.Tensor:
    """Decode an open image file: pixel limit from the header, reduced decoding, orientation."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        with Image.open(handle) as opened:
            _check_pixel_limit(path, *opened.size, max_pixels)
            orientation = _orientation(opened)
            if min_short_side is not None and opened.format == "JPEG":
                scale = min(opened.size) / min_short_side
                if scale >= 2:
                    opened.draft("RGB", (int(opened.size[0] / scale), int(opened.size[1] / scale)))
            opened.load()
            integer_peak = 65535.0 if opened.mode.startswith("I;16") else None
            image = _apply_orientation(_reduce_big(opened, min_short_side), orientation)
            return _pil_to_pixels(image, integer_peak)


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Any exception while reading or decoding ``path`` as an :class:`ImageReadError` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except ImageReadError:
        raise
    except InputError as exc:  # values that do not map to [0, 1]
        raise ImageReadError(f"{path}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image file PIL can decode") from exc
    except Image.DecompressionBombError as exc:  # PIL's own limit, checked from the header too
        raise ImageReadError(f"{path}: image is over the pixel limit of PIL ({exc})") from exc
    except MemoryError as exc:
        raise ImageReadError(f"{path}: not enough memory to decode this image") from exc
    except Exception as exc:  # any decoder failure is this file's error, never the run's
        raise ImageReadError(f"{path}: cannot decode image (corrupt or truncated?): {exc}") from exc


def _orientation(image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF: show the pixels as they are stored
        return 1


def _apply_orientation(image, orientation: int):
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return image if method is None else image.transpose(method)


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """An EXIF orientation (1-8) applied to a (..., H, W) tensor, as PIL's transposes do it
    (``_apply_orientation``); for pixels decoded on a device."""
    if orientation in (5, 6, 7, 8):  # the transposing ones: swap the axes, then flip
        pixels = pixels.transpose(-2, -1)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation, ())
    return pixels.flip(flips) if flips else pixels


def _reduce_big(image, min_short_side: int | None):
    """Box-reduce a big decoded image by an integer factor that keeps the short side >= min."""
    if min_short_side is None or image.size[0] * image.size[1] <= REDUCE_ABOVE_PIXELS:
        return image
    factor = min(image.size) // min_short_side
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGB")
    return image.reduce(factor)


def pil_to_tensor(image) -> torch.Tensor:
    """A PIL image of any mode as a (3, H, W) float RGB tensor in [0, 1].

    8-bit modes are divided by 255, 16-bit ones by 65535; float images (mode ``F``) must
    already lie in [0, 1]. Raises :class:`InputError` for values it cannot map to [0, 1].
    """
    return pixels_to_float(_pil_to_pixels(image, 65535.0 if image.mode.startswith("I;16") else None))


def _pil_to_pixels(image, integer_peak: float | None = None) -> torch.Tensor:
    """(3, H, W) pixels: uint8 for 8-bit modes, float in [0, 1] for integer and float ones."""
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise InputError("float image contains NaN or Inf values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-4 or high > 1 + 1e-4:
            raise InputError(
                f"float image values span [{low:.4g}, {high:.4g}]; float images must hold intensities in [0, 1]"
            )
        return torch.from_numpy(np.clip(array, 0, 1)).unsqueeze(0).repeat(3, 1, 1)
    if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
        array = np.asarray(image).astype(np.float32)
        high = float(array.max()) if array.size else 0.0
        if array.size and float(array.min()) < 0:
            raise InputError("integer image has negative values")
        peak = integer_peak or (255.0 if high <= 255 else 65535.0 if high <= 65535 else float(2**32 - 1))
        tensor = torch.from_numpy(np.ascontiguousarray(array) / peak).clamp_(0, 1)
        return tensor.unsqueeze(0).repeat(3, 1, 1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


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


def is_image_candidate(path: Path) -> bool:
    """Whether a folder scan reports ``path``: an image suffix and not a folder.

    Non-regular files (FIFOs, sockets, devices) with an image suffix are kept, so that
    reading them gives a clear error instead of silently skipping them.
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:  # a dangling link: kept, so it is reported as missing
        return True


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted list of image files.

    Explicit paths are kept as given; folder scans keep every non-folder entry with an image
    suffix (a FIFO named ``x.jpg`` is kept, to be refused with a clear error when read), and
    an empty folder with an image suffix (``x.jpg/``), to be reported instead of dropped.
    """
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            entries = sorted(path.rglob("*"))
            found.extend(p for p in entries if is_image_candidate(p) or _empty_image_named_folder(p))
        else:
            found.append(path)
    return found


def _empty_image_named_folder(path: Path) -> bool:
    """A folder named like an image (``x.jpg/``) holding no image: an input to report, not to skip."""
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_dir():
        return False
    return not any(is_image_candidate(p) for p in path.rglob("*"))
