"""The device input pipeline: uint8 leaves the CPU, everything after it runs on the device.

``QualityEngine(pipeline="device")`` (the default on CUDA) splits the CPU pipeline of
loading.py in two:

- :class:`DecodedInputs`, in DataLoader workers: each file decoded to uint8 (the very pixels
  the CPU pipeline divides by 255: same reduced decoding, same EXIF orientation), or,
  with a device JPEG decoder, only read with its header checked (:func:`load_pixels_or_jpeg`).
  16-bit, integer and float images travel as float (uint8 cannot hold them), in-memory
  inputs as the CPU pipeline checks them; tensors already on the device stay there.
- :class:`DeviceViews`, in the main process: uint8 sent to the device (pinned,
  non-blocking), JPEGs decoded there in batches (nvjpeg on CUDA, through
  ``torchvision.io.decode_jpeg``), the orientation applied, conversion to float, the resize
  and the crops of the protocol on the device, images of one size in one batch.

The hostile-input rules are the CPU pipeline's: the pixel limit is checked from the header
before anything is decoded; whatever goes wrong with one input is that input's error (a JPEG
the device decoder refuses is decoded by PIL instead, and fails only if PIL fails too).
Tensors on the device are checked there: per image a NaN/Inf flag and the value range, read
back with one transfer per batch.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bpclip_core.inputs.checks import check_image_shape, check_min_side, value_problem
from bpclip_core.inputs.decoding import EncodedJPEG, load_pixels, load_pixels_or_jpeg, orient, pixels_to_float
from bpclip_core.inputs.loading import PairedInputs, error_text, pair_decode_side, tensor_as_float, to_image_tensor


@dataclass(frozen=True)
class OnDevice:
    """Stands in, in the workers' copy of the inputs, for a tensor already on the engine's device."""


def on_device(source: Any, device: torch.device) -> bool:
    """Whether ``source`` is a tensor on ``device`` (any index of its type when it names none)."""
    if not isinstance(source, torch.Tensor) or source.device.type != device.type:
        return False
    return device.index is None or source.device.index in (None, device.index)


class DecodedInputs(PairedInputs):
    """The workers' half: per input, its pixels (uint8, or float), an :class:`EncodedJPEG` for
    the device decoder, or :class:`OnDevice` as given.

    ``device_jpeg``: which JPEGs go to the device decoder: ``none``, ``full-scale`` (those
    PIL decodes at full scale: the same pixels up to the decoders' rounding) or ``all`` (the
    others with PIL's reduced decoding reproduced by a box: faster, less exact).
    """

    def __init__(self, *args: Any, device_jpeg: str = "none", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if device_jpeg not in ("none", "full-scale", "all"):
            raise ValueError(f"device_jpeg must be none, full-scale or all, got {device_jpeg!r}")
        self.device_jpeg = device_jpeg

    def prepare(self, source: Any, reference: Any) -> tuple[Any, Any]:
        short = pair_decode_side(source, reference, self.protocol.decode_short_side, self.max_pixels)
        return self._read(source, short), None if reference is None else self._read(reference, short)

    def _read(self, source: Any, short: int | None) -> torch.Tensor | EncodedJPEG | OnDevice:
        """One side of a pair, decoded keeping ``short`` (that of :func:`pair_decode_side`)."""
        if isinstance(source, OnDevice):
            return source
        if not isinstance(source, (str, Path)):  # in-memory: checked on the CPU, as the CPU pipeline does
            return to_image_tensor(source, None, self.data_range, self.max_pixels)
        if self.device_jpeg == "none":
            pixels = load_pixels(source, short, self.max_pixels)
        else:
            pixels = load_pixels_or_jpeg(source, short, self.max_pixels, reduced=self.device_jpeg == "all")
        if isinstance(pixels, torch.Tensor):
            check_min_side(pixels, f"{source}: image")
        return pixels


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; from the CPU to CUDA through pinned memory, without waiting."""
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def value_stats(image: torch.Tensor) -> torch.Tensor:
    """(3,) on the image's device, with no sync: all values finite (1/0), lowest, highest."""
    values = image.detach().float()
    return torch.stack([torch.isfinite(values).all().float(), values.amin(), values.amax()])


def reduce_like_draft(image: torch.Tensor, factor: int) -> torch.Tensor:
    """A full-scale decoded (3, H, W) image box-reduced by ``factor`` (that of
    :func:`~bpclip_core.inputs.decoding.reduction_factor`) to the size PIL's reduced decoding gives
    (ceil(H / factor) x ceil(W / factor)): its scaled IDCT averages much like a box, and
    other formats are box-reduced by PIL itself."""
    if factor == 1:
        return image
    return torch.nn.functional.avg_pool2d(image[None], factor, ceil_mode=True)[0]


def decode_jpegs(encoded: Sequence[EncodedJPEG], device: torch.device) -> list[torch.Tensor | Exception]:
    """JPEG bytes decoded to (3, H, W) uint8 RGB on ``device`` in one batch (nvjpeg on CUDA);
    if the batch fails, one by one, so that a file the decoder refuses gets its own exception."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [e.data for e in encoded]
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except Exception:  # e.g. one file in the batch the device decoder cannot take
            decoded: list[torch.Tensor | Exception] = []
            for one in data:
                try:
                    decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except Exception as exc:
                    decoded.append(exc)
            return decoded


@functools.cache
def device_decodes_jpeg(device: torch.device) -> bool:
    """Whether torchvision decodes JPEGs on ``device`` (nvjpeg on CUDA), tried on a small image."""
    try:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (48, 32), (200, 100, 50)).save(buffer, format="JPEG")
        encoded = EncodedJPEG(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8), 1)
        (decoded,) = decode_jpegs([encoded], device)
        return isinstance(decoded, torch.Tensor) and decoded.shape == (3, 32, 48)
    except Exception:  # no torchvision, or one built without nvjpeg
        return False


class DeviceViews:
    """The main process's half: a chunk of :class:`DecodedInputs` items as views on ``device``.

    Calling it with a chunk gives ``(index, views, reference views, error)`` per input, as
    the CPU pipeline's :class:`~bpclip_core.inputs.loading.PreparedViews` does, with the views on
    the device.

    Args:
        dataset: the workers' dataset (its protocol, data range and pixel limit apply).
        sources, references: the inputs and their references as given (tensors on the device
            included, which the dataset holds as :class:`OnDevice`).
        device: where the views are made.
    """

    def __init__(
        self, dataset: DecodedInputs, sources: Sequence[Any], references: Sequence[Any], device: torch.device
    ) -> None:
        self.dataset, self.device = dataset, device
        self.inputs = (sources, references)

    def __call__(self, chunk: Sequence[tuple[int, Any, Any, str | None]]) -> list[tuple[int, Any, Any, str | None]]:
        errors: dict[int, str] = {}
        pixels: dict[tuple[int, int], torch.Tensor] = {}  # (index, 0 image / 1 reference) -> float on device
        encoded: list[tuple[tuple[int, int], EncodedJPEG]] = []
        checks: list[tuple[tuple[int, int], float, torch.Tensor]] = []
        for index, image, reference, error in chunk:
            if error is not None:
                errors[index] = error
                continue
            for key, item in (((index, 0), image), ((index, 1), reference)):
                try:
                    if isinstance(item, EncodedJPEG):
                        encoded.append((key, item))
                    elif isinstance(item, OnDevice):
                        tensor, scale = self._given_tensor(key)
                        checks.append((key, scale, value_stats(tensor)))
                        pixels[key] = tensor / scale if scale != 1.0 else tensor
                    elif item is not None:
                        pixels[key] = pixels_to_float(to_device(item, self.device))
                except Exception as exc:
                    errors[index] = error_text(exc)
        self._decode(encoded, pixels, errors)
        if checks:  # the one sync of a batch with tensors given on the device
            for (key, scale, _), (finite, low, high) in zip(checks, torch.stack([c[2] for c in checks]).tolist()):
                problem = value_problem("image", finite == 1.0, low, high, scale)
                if problem is not None:
                    errors[key[0]] = problem
        return self._views([index for index, *_ in chunk], pixels, errors)

    def _given_tensor(self, key: tuple[int, int]) -> tuple[torch.Tensor, float]:
        """A tensor input on the device as (3, H, W) float and its white value (shapes checked here)."""
        image, scale = tensor_as_float(self.inputs[key[1]][key[0]], self.device)
        return check_image_shape(image, "image")[0], self.dataset.data_range if scale is None else scale

    def _decode(
        self,
        encoded: list[tuple[tuple[int, int], EncodedJPEG]],
        pixels: dict[tuple[int, int], torch.Tensor],
        errors: dict[int, str],
    ) -> None:
        """Decode the JPEGs on the device; PIL (on the CPU) takes any file the device decoder refuses."""
        if not encoded:
            return
        for (key, jpeg), decoded in zip(encoded, decode_jpegs([e for _, e in encoded], self.device)):
            path = self.inputs[key[1]][key[0]]
            try:
                if isinstance(decoded, Exception):  # reduced as the workers would have (jpeg.reduce)
                    short = self.dataset.protocol.decode_short_side if jpeg.reduce > 1 else None
                    pil = load_pixels(path, short, self.dataset.max_pixels)
                    image = pixels_to_float(to_device(pil, self.device))
                else:
                    image = orient(reduce_like_draft(pixels_to_float(decoded), jpeg.reduce), jpeg.orientation)
                check_min_side(image, f"{path}: image")
                pixels[key] = image
            except Exception as exc:
                errors[key[0]] = error_text(exc)

    def _views(
        self, indices: list[int], pixels: dict[tuple[int, int], torch.Tensor], errors: dict[int, str]
    ) -> list[tuple[int, Any, Any, str | None]]:
        """The protocol's views, one batch per image size (FR pairs: per pair of sizes)."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index in indices:
            if index not in errors:
                reference = pixels.get((index, 1))
                groups[(pixels[(index, 0)].shape, None if reference is None else reference.shape)].append(index)
        views: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for (_, reference_shape), members in groups.items():
            try:
                images = torch.stack([pixels[(i, 0)] for i in members])
                references = None if reference_shape is None else torch.stack([pixels[(i, 1)] for i in members])
                image_views, reference_views, counts = self.dataset.protocol.batch_views(images, references)
            except Exception as exc:  # e.g. FR pairs of two sizes, or an image over the 'full' limit
                errors.update(dict.fromkeys(members, error_text(exc)))
                continue
            per_image = image_views.split(counts)
            per_reference = [None] * len(members) if reference_views is None else reference_views.split(counts)
            views.update(zip(members, zip(per_image, per_reference)))
        return [(i, *views[i], None) if i in views else (i, None, None, errors[i]) for i in indices]
