"""Fixtures of the training tests: pristine images from skimage and tiny synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PRISTINE = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "retina")


def write_pristine(folder: Path, size: int, names: tuple[str, ...] = PRISTINE) -> Path:
    """skimage's sample images, centre-cropped square and resized to ``size``, as PNG files."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        array = getattr(data, name)()
        if isinstance(array, tuple):  # stereo pairs: the left view
            array = array[0]
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        picture = Image.fromarray(array[..., :3].astype(np.uint8))
        side = min(picture.size)
        left, top = (picture.size[0] - side) // 2, (picture.size[1] - side) // 2
        picture.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC).save(
            folder / f"{name}.png"
        )
    return folder


@pytest.fixture(scope="session")
def pristine_dir(tmp_path_factory) -> Path:
    return write_pristine(tmp_path_factory.mktemp("pristine"), 72)


@pytest.fixture(scope="session")
def small_synthetic_csv(tmp_path_factory, pristine_dir) -> Path:
    """A small FR dataset: 8 references x 2 distortions x 5 levels at 64 px."""
    from bpclip_core.data.synthetic import synthesize_dataset

    return synthesize_dataset(
        pristine_dir, tmp_path_factory.mktemp("synthetic"), ["gaussian_blur", "gaussian_noise"], size=64
    )
