"""Checks on the image tensors given to the models: one place, clear errors."""

from __future__ import annotations

import torch

from bpclip_core.errors import InputError
from bpclip_core.inputs.decoding import aspect_problem

MIN_SIDE = 32  # the deepest level is H/32: smaller images have no feature grid


def check_images(images: torch.Tensor, name: str = "images", data_range: float = 1.0) -> torch.Tensor:
    """Validate a batch of RGB images and return it as float32 in [0, 1].

    Args:
        images: (N, 3, H, W) or (3, H, W), values in [0, data_range]; any real dtype but
            bool (:func:`check_dtype`): integers are read on the scale of ``data_range`` too.
        name: what the caller calls this argument, for error messages.
        data_range: the maximum value of the input scale (1.0 or 255.0).
    Raises:
        TypeError: not a tensor. InputError: meta, complex or bool tensor, wrong shape, too
        small, NaN/Inf, out of range.
    """
    images = check_image_shape(images, name)
    if not images.is_floating_point():
        images = images.float()
    values = images.detach()
    finite = bool(torch.isfinite(values).all())
    problem = value_problem(name, finite, float(values.min()), float(values.max()), data_range)
    if problem is not None:
        raise InputError(problem)
    return images / data_range if data_range != 1.0 else images


def check_image_shape(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """The shape half of :func:`check_images` (reads no values): the batch as (N, 3, H, W),
    its dtype checked by :func:`check_dtype` (floating point as float32)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(images).__name__}")
    images = check_dtype(images, name)
    single = images.ndim == 3
    if single:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise InputError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] != 3:
        if images.shape[-1] in (1, 3, 4):  # (N, H, W, C): the layout of numpy, PIL and TensorFlow
            layout, order = ("(H, W, C)", "2, 0, 1") if single else ("(N, H, W, C)", "0, 3, 1, 2")
            hint = f"it looks channels-last {layout}: use images.permute({order})"
            if images.shape[-1] != 3:
                hint += ", and convert grayscale or RGBA images to RGB"
        else:
            hint = "convert grayscale or RGBA images to RGB first"
        raise InputError(
            f"{name} must have 3 (RGB) channels in dim 1, got {images.shape[1]} (shape {tuple(images.shape)}); {hint}"
        )
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    check_min_side(images, name)
    return images


def value_problem(name: str, finite: bool, low: float, high: float, data_range: float = 1.0) -> str | None:
    """The value half of :func:`check_images`, from statistics computed anywhere (e.g. on a GPU):
    the error for values that are not all finite or not in [0, data_range], else None."""
    if not finite:
        return f"{name} contains NaN or Inf values"
    tolerance = 1e-4 * data_range
    if low < -tolerance or high > data_range + tolerance:
        return (
            f"{name} values must lie in [0, {data_range:g}], got [{low:.4g}, {high:.4g}]; "
            f"set data_range to the scale of your images (255.0 for 0..255 float data; uint8 is always "
            f"read as 0..255), "
            f"or convert them to float in [0, 1]"
        )
    return None


def refuse_dtype(kind: str, dtype: object, is_complex: bool, is_bool: bool) -> None:
    """Raise :class:`InputError` for the dtypes no image has (complex, bool), of tensors and arrays alike.

    ``kind`` names the input (``"images"``, ``"an array"``); ``dtype`` is shown as given.
    """
    if is_complex:
        raise InputError(
            f"{kind} of complex dtype {dtype} cannot be scored (the imaginary part would be dropped): "
            "pass the real-valued image, e.g. x.real or x.abs()"
        )
    if is_bool:
        raise InputError(f"{kind} of dtype {dtype} cannot be scored: pass uint8 (0..255) or float image data")


def check_dtype(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """The dtype rules of every tensor input (engine, adapters, files' callers): ``images`` as the model takes it.

    Refused with :class:`InputError`: meta tensors (no data), complex and bool tensors.
    Floating-point tensors come back as float32, the model's dtype (float64 would fail in
    its first convolution; float16 and bfloat16 are widened); integer tensors as they are,
    converted where their values are read, on the scale of ``data_range`` (uint8 stays
    compact up to the device in the device pipeline).
    """
    if images.is_meta:
        raise InputError(
            f"{name} on the meta device cannot be scored: the meta device holds no data "
            "(pass a tensor on the CPU or a GPU)"
        )
    refuse_dtype(name, images.dtype, images.is_complex(), images.dtype == torch.bool)
    if images.is_floating_point() and images.dtype != torch.float32:
        return images.float()
    return images


def check_min_side(image: torch.Tensor, name: str) -> None:
    """Raise :class:`InputError` naming ``name`` (e.g. the file) if a side is below :data:`MIN_SIDE`,
    or the long side over :data:`~bpclip_core.inputs.decoding.MAX_ASPECT_RATIO` times the short one.

    The size reads width x height, as image tools (and our pixel-limit messages) give it.
    """
    height, width = image.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise InputError(f"{name} is {width}x{height} px; each side must be at least {MIN_SIDE} px")
    problem = aspect_problem(width, height)
    if problem is not None:
        raise InputError(f"{name}: {problem}")


def check_pair(
    distorted: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a full-reference pair: each a valid image batch, both of the same shape."""
    distorted = check_images(distorted, "distorted images", data_range)
    reference = check_images(reference, "reference images", data_range)
    if distorted.shape != reference.shape:
        raise InputError(
            f"full-reference pairs must have the same shape: distorted {tuple(distorted.shape)} "
            f"vs reference {tuple(reference.shape)}"
        )
    return distorted, reference
