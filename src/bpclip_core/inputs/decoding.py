"""Reading image files into tensors, and the test-time resize protocol.

Every file is checked before it is decoded: it must be a regular file (a FIFO named
``x.jpg`` would block the reader forever), and the size its header declares must be within
the pixel limit (:func:`default_max_pixels`, ``BPCLIP_MAX_PIXELS``). Anything that goes
wrong while decoding one file becomes an :class:`ImageReadError` naming that file.

Reduced decoding: given the short side the caller must keep (``min_short_side``; the
protocols ask for :data:`~bpclip_core.inputs.protocol.REDUCTION_MARGIN` times the side they resize
to), a file is decoded smaller by :func:`reduction_factor`, which depends on its size alone:
JPEGs through PIL's ``draft`` (1/2, 1/4, 1/8 in the IDCT, then a box for multiples of 8),
every other format box-reduced in its own 8- or 16-bit mode, so the float RGB copy never
exists at full size, and two files of one size (an FR pair, a JPEG and a PNG) decode to one size.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bpclip_core.errors import InputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".avif"}
    | {".heic", ".heif"}  # read through pillow-heif (the ``heif`` extra); without it, each is reported
)
# The long side of an image may be at most this many times its short side: with the short side
# resized to the protocol's size, the network's input is then bounded on both sides (a 32 x
# 4,000,000 px strip would reach it at full length). Checked from the header, before decoding.
MAX_ASPECT_RATIO = 32
MAX_PIXELS_ENV = "BPCLIP_MAX_PIXELS"
# 150 MP: a 12000x12000 scan still decodes; PIL's own decompression-bomb error starts at 179 MP.
DEFAULT_MAX_PIXELS = 150_000_000
# The largest JPEG handed to a device decoder as it is (load_pixels_or_jpeg): bigger ones are
# decoded by PIL in the workers, at the reduced scale, so they never exist at full size on the device.
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
    CMYK, 16-bit and float images to RGB in [0, 1]. With ``min_short_side``, the image is
    decoded smaller by :func:`reduction_factor` (JPEGs in the IDCT, other formats box-reduced
    in their own mode), keeping the short side at least that long: a 12000x9000 photo to be
    shrunk anyway never exists at full size as floats; files of one size give one size.

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


def header_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """The (width, height) ``path`` is shown at (EXIF orientation applied), from its header alone.

    Raises :class:`ImageReadError` as :func:`load_image` does for what the header shows
    (missing, not a regular file, over the pixel limit, not an image).
    """
    from PIL import Image

    path = Path(path)
    with _decoding(path), warnings.catch_warnings(), open_regular_file(path) as handle:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        with _open_image(handle) as opened:
            width, height = opened.size
            _check_pixel_limit(path, width, height, max_pixels)
            return (height, width) if _orientation(opened) in (5, 6, 7, 8) else (width, height)


@dataclass(frozen=True)
class EncodedJPEG:
    """A JPEG file's bytes, for a batched decoder on the device, with what :func:`load_image`
    would do after decoding: its EXIF orientation and the factor of its reduced decoding
    (:func:`reduction_factor`), for the device to reproduce (a box reduction, then the orientation)."""

    data: torch.Tensor  # (num_bytes,) uint8
    orientation: int = 1
    reduce: int = 1


def reduction_factor(width: int, height: int, min_short_side: int | None) -> int:
    """The factor by which :func:`load_image` decodes a ``width`` x ``height`` file of any format
    to keep ``min_short_side``: the largest of 1, 2, 4, 8 and the multiples of 8 (PIL's JPEG
    ``draft`` scales, then a box) that leaves the short side at least that long. The decoded
    image is ceil(width / factor) x ceil(height / factor)."""
    if min_short_side is None:
        return 1
    most = min(width, height) // max(min_short_side, 1)
    if most >= 8:
        return 8 * (most // 8)
    return next((s for s in (4, 2) if most >= s), 1)


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
        with _open_image(io.BytesIO(data)) as opened:
            width, height = opened.size
            _check_pixel_limit(path, width, height, max_pixels)
            plain = opened.mode == "L" or (opened.mode == "RGB" and opened.info.get("adobe_transform", 1) != 0)
            complete = data.rstrip(b"\0").endswith(b"\xff\xd9")  # ends with its end-of-image marker
            reduce = reduction_factor(width, height, min_short_side)
            wanted = opened.format == "JPEG" and plain and complete and (reduced or reduce == 1)
            if wanted and width * height <= REDUCE_ABOVE_PIXELS:
                return EncodedJPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), _orientation(opened), reduce)
        return _decode(io.BytesIO(data), path, min_short_side, max_pixels)


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """Decoded pixels as float in [0, 1]: uint8 divided by 255 (float pixels are returned as they are)."""
    return pixels.float().div_(255.0) if pixels.dtype == torch.uint8 else pixels


def _check_pixel_limit(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """The checks made from the header, before decoding: the pixel limit and :data:`MAX_ASPECT_RATIO`."""
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if width * height > limit:
        raise ImageReadError(
            f"{path}: image is {width}x{height} = {width * height} px, over the pixel limit of "
            f"{limit} px (raise it with --max-pixels or {MAX_PIXELS_ENV}, or shrink the file)"
        )
    problem = aspect_problem(width, height)
    if problem is not None:
        raise ImageReadError(f"{path}: {problem}")


def aspect_problem(width: int, height: int) -> str | None:
    """Why an image of this size cannot be scored for its shape (over :data:`MAX_ASPECT_RATIO`), else None."""
    short, long = min(width, height), max(width, height)
    if long <= MAX_ASPECT_RATIO * max(short, 1):
        return None
    return (
        f"image is {width}x{height} px: its long side is {long / max(short, 1):.0f} times its short side, "
        f"over the limit of {MAX_ASPECT_RATIO} (the model's input is bounded on both sides); crop it into parts"
    )


_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _open_image(source) -> Iterator:
    """``PIL.Image.open`` with PIL's own pixel limit off while the header is read: ours
    (:func:`_check_pixel_limit`, which ``--max-pixels`` may raise above PIL's 179 MP) is checked
    from the header right after. HEIF files open through pillow-heif when it is installed."""
    from PIL import Image

    _register_heif()
    with _PIL_LIMIT_LOCK:  # PIL's limit is a module global: other threads see it off for one header read
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with opened:
        yield opened


HEIF_SUFFIXES = frozenset({".heic", ".heif"})
HEIF_ADVICE = "HEIF images need the pillow-heif package: pip install 'bpclip[heif]'"


def _register_heif() -> bool:
    """Let PIL open HEIF files if pillow-heif is installed (once); whether it is."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered


_heif_registered: bool | None = None


def _decode(handle, path: Path, min_short_side: int | None, max_pixels: int | None) -> torch.Tensor:
    """Decode an open image file: pixel limit from the header, reduced decoding, orientation."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        with _open_image(handle) as opened:
            size = opened.size
            _check_pixel_limit(path, *size, max_pixels)
            orientation = _orientation(opened)
            factor = reduction_factor(*size, min_short_side)
            drafted = 1
            if factor > 1 and opened.format == "JPEG":
                draft = min(factor, 8)  # a scale of the IDCT; the rest of the factor is a box
                opened.draft("RGB", (size[0] // draft, size[1] // draft))
                drafted = draft if opened.size != size else 1  # draft may decline (e.g. several tiles)
            opened.load()
            integer_peak = integer_white(opened) if opened.mode.startswith("I") else None
            image = _apply_orientation(_box_reduce(opened, factor // drafted), orientation)
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
        if path.suffix.lower() in HEIF_SUFFIXES and not _register_heif():
            raise ImageReadError(f"{path}: {HEIF_ADVICE}") from exc
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


def _box_reduce(image, factor: int):
    """A decoded PIL image box-reduced by ``factor`` in its own mode (8-bit, 16-bit as 32-bit integer)."""
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
    return pixels_to_float(_pil_to_pixels(image, integer_white(image) if image.mode.startswith("I") else None))


_TIFF_BITS_PER_SAMPLE, _TIFF_MAX_SAMPLE_VALUE = 258, 281


def integer_white(image) -> float:
    """The value of white of a 16- or 32-bit integer PIL image (modes ``I;16*`` and ``I``), from
    what its format declares, never from its pixels: 65535 for 16-bit modes and for PNG and
    PPM/PGM (whose 16-bit data PIL holds as ``I``); for TIFF, its MaxSampleValue tag, else
    65535 if it declares 16 bits per sample.

    Raises:
        InputError: a 32-bit integer image that declares no white level.
    """
    if image.mode.startswith("I;16") or image.format in ("PNG", "PPM"):
        return 65535.0
    tags = getattr(image, "tag_v2", None) or {}
    declared = tags.get(_TIFF_MAX_SAMPLE_VALUE)
    if declared:
        return float(max(declared) if isinstance(declared, tuple) else declared)
    bits = tags.get(_TIFF_BITS_PER_SAMPLE)
    if bits and max(bits if isinstance(bits, tuple) else (bits,)) <= 16:
        return 65535.0
    raise InputError(
        "32-bit integer image with no declared white level (TIFF MaxSampleValue tag): its scale would be a "
        "guess; save it as 8- or 16-bit, or as float in [0, 1]"
    )


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
        peak = integer_peak or integer_white(image)
        array = np.asarray(image).astype(np.float64)
        if array.size and float(array.min()) < 0:
            raise InputError("integer image has negative values")
        if array.size and float(array.max()) > peak:
            raise InputError(
                f"integer image has values up to {array.max():.0f}, above its declared white of {peak:.0f}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array / peak, dtype=np.float32))
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


@dataclass(frozen=True)
class ScanProblem:
    """An entry a folder scan could not take (a folder it cannot read, a path too long, a
    symlink loop): kept as an input so that the run reports it, with ``reason`` as its error."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return str(self.path)


def find_images(paths: Iterable[str | Path]) -> list[Path | ScanProblem]:
    """Expand files and folders (searched recursively) into a sorted list of image files.

    Explicit paths are kept as given; folder scans keep every non-folder entry with an image
    suffix (a FIFO named ``x.jpg`` is kept, to be refused with a clear error when read), and
    an empty folder with an image suffix (``x.jpg/``), to be reported instead of dropped.
    Symlinked subfolders are followed, each folder scanned once; what cannot be scanned
    is a :class:`ScanProblem` in the list, never an exception (:func:`scan_folder`).
    """
    found: list[Path | ScanProblem] = []
    for item in paths:
        path = Path(item)
        found.extend(scan_folder(path) if path.is_dir() else [path])
    return found


def scan_folder(folder: Path) -> list[Path | ScanProblem]:
    """The image files under ``folder``, sorted by path, and a :class:`ScanProblem` for each
    entry that cannot be scanned. Iterative (a tree 1,200 levels deep is no recursion limit);
    symlinks to folders are followed, but a folder already scanned (a loop) is not entered twice."""
    found: list[Path | ScanProblem] = []
    named_like_images: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            info = current.stat()
            key = (info.st_dev, info.st_ino)
            if key in seen:
                found.append(ScanProblem(current, f"{current}: not scanned: a link to {seen[key]}, scanned already"))
                continue
            seen[key] = current
            with os.scandir(current) as entries:
                listed = list(entries)
        except OSError as exc:
            found.append(ScanProblem(current, f"{current}: this folder cannot be scanned: {exc.strerror or exc}"))
            continue
        for entry in listed:
            path = Path(entry.path)
            try:
                is_folder = entry.is_dir()  # follows symlinks
            except OSError:  # e.g. a name too long to stat: kept if named like an image, to be reported
                is_folder = False
            if is_folder:
                pending.append(path)
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    named_like_images.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
    files = [p for p in found if isinstance(p, Path)]
    for empty in named_like_images:  # x.jpg/ holding no image: an input to report, not to skip
        if not any(empty in f.parents for f in files):
            found.append(empty)
    return sorted(found, key=lambda p: p.path if isinstance(p, ScanProblem) else p)


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """:func:`find_images` for training data, where nothing may be skipped: the files, or an
    :class:`InputError` for the first entry that cannot be scanned."""
    found = find_images(paths)
    for problem in (p for p in found if isinstance(p, ScanProblem)):
        raise InputError(problem.reason)
    return [p for p in found if isinstance(p, Path)]
