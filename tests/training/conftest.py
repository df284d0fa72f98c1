"""Fixtures of the training tests: pristine images from skimage and tiny synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpclip_core.data.content import write_skimage_squares

PRISTINE = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "retina")


def write_pristine(folder: Path, size: int, names: tuple[str, ...] = PRISTINE) -> Path:
    """skimage's sample images, centre-cropped square and resized to ``size``, as PNG files."""
    return write_skimage_squares(folder, size, names)


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
