"""Test-time protocols: how an image of any size becomes the model's input.

- ``resize`` (default): the whole image, its short side shrunk to ``size`` when larger
  (never enlarged). One view per image.
- ``crops``: the short side shrunk to at most ``2 * size``, then ``num_crops`` crops of
  ``size x size`` (the four corners and the centre, then evenly spaced); the score is the
  mean over crops. One view per crop.
- ``full``: the image as it is, up to ``max_pixels`` (larger images are an error that
  suggests another protocol).

FR pairs get the same geometry for the distorted and the reference image. Files may be
decoded smaller first (:attr:`TestTimeProtocol.decode_short_side`), but only to
:data:`REDUCTION_MARGIN` times the side the protocol resizes to, then resized as tensors are:
a file, a PIL image and a tensor of one image score alike (within 1e-3, tests/test_one_decode.py).
The one object
serves users' scores (engine, CLI, adapters) and reported figures (training's validation and
test, ``bpclip evaluate``), with one default, so both come from the same input geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bpclip_core.choices import DEFAULT_PROTOCOL, PROTOCOLS
from bpclip_core.errors import InputError
from bpclip_core.inputs.decoding import resize_short_side

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "REDUCTION_MARGIN", "TestTimeProtocol", "crop_boxes", "pair_size_error"]

# Files are decoded at a reduced scale only down to this many times the short side the
# protocol resizes to. Measured with the bundled NR model (size 224) on photo-like JPEGs:
# PIL's reduced JPEG decoding then the antialiased resize moved scores from the full-scale
# resize by up to 2.8e-3 at 3-6x, 4e-4 at 8-12x (and a box reduction by up to 4e-3 at 3x).
REDUCTION_MARGIN = 8


@dataclass(frozen=True)
class TestTimeProtocol:
    """One of :data:`PROTOCOLS` with its sizes."""

    name: str = DEFAULT_PROTOCOL
    size: int = 384
    num_crops: int = 5
    max_pixels: int = 16_000_000

    __test__ = False  # not a pytest test class, despite its name

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown test-time protocol {self.name!r}; choose one of {PROTOCOLS}")
        if self.size < 32 or self.num_crops < 1:
            raise ValueError("protocol size must be at least 32 and num_crops at least 1")

    def describe(self) -> str:
        """A short account for reports, e.g. ``resize (short side 384 px)``."""
        return {
            "resize": f"resize (short side {self.size} px)",
            "crops": f"crops ({self.num_crops} of {self.size} px)",
            "full": "full (the image as it is)",
        }[self.name]

    @property
    def resized_short_side(self) -> int | None:
        """The short side images are resized to (at most; None: kept as they are)."""
        return {"resize": self.size, "crops": 2 * self.size, "full": None}[self.name]

    @property
    def decode_short_side(self) -> int | None:
        """The smallest short side a reduced decoding must keep (None: decode at full size):
        :data:`REDUCTION_MARGIN` times :attr:`resized_short_side`, so that it cannot move scores."""
        resized = self.resized_short_side
        return None if resized is None else REDUCTION_MARGIN * resized

    def pair_views(
        self, image: torch.Tensor, reference: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (V, 3, h, w) views of one (3, H, W) image and of its reference (FR)."""
        views, ref_views, _ = self.batch_views(image[None], None if reference is None else reference[None])
        return views, ref_views

    def batch_views(
        self, images: torch.Tensor, references: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
        """Views of a batch (N, 3, H, W), image by image, and the number of views of each."""
        if references is not None and references.shape != images.shape:
            raise pair_size_error(tuple(images.shape[-2:]), tuple(references.shape[-2:]))
        single = [1] * images.shape[0]
        if self.name == "full":
            if images.shape[-1] * images.shape[-2] > self.max_pixels:
                raise InputError(
                    f"image is {images.shape[-1]}x{images.shape[-2]} px, over the 'full' protocol's limit of "
                    f"{self.max_pixels} px; use the 'resize' or 'crops' protocol"
                )
            return images, references, single
        if self.name == "resize":
            refs = None if references is None else resize_short_side(references, self.size)
            return resize_short_side(images, self.size), refs, single
        images = resize_short_side(images, 2 * self.size)
        boxes = crop_boxes(images.shape[-2], images.shape[-1], self.size, self.num_crops)

        def cut(batch: torch.Tensor) -> torch.Tensor:  # image-major: all crops of image 0 first
            return torch.stack([batch[:, :, t : t + h, x : x + w] for t, x, h, w in boxes], dim=1).flatten(0, 1)

        refs = None if references is None else cut(resize_short_side(references, 2 * self.size))
        return cut(images), refs, [len(boxes)] * images.shape[0]


def pair_size_error(distorted: tuple[int, ...], reference: tuple[int, ...]) -> InputError:
    """The error of an FR pair of two sizes, each given as (height, width)."""
    return InputError(f"full-reference pairs must have the same size: distorted {distorted} vs reference {reference}")


def crop_boxes(height: int, width: int, size: int, count: int) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of ``count`` crops: corners and centre first, then evenly spaced."""
    h, w = min(size, height), min(size, width)
    bottom, right = height - h, width - w
    boxes = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    extra = count - len(boxes)
    if extra > 0:
        side = int(extra**0.5) + 1
        grid = [(round(bottom * i / side), round(right * j / side)) for i in range(side + 1) for j in range(side + 1)]
        boxes += [g for g in grid if g not in boxes]
    return [(t, left, h, w) for t, left in boxes[:count]]
