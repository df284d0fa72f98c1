"""Helpers shared by the FiftyOne tests (tests/plugins and tests/hostile): seeded images on
disk, throwaway persistent datasets, and one quality run with a given checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np
from PIL import Image

from bpclip_plugins.fiftyone import compute_quality


def seeded_images(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct seeded random 56x48 PNGs in ``folder``: ``img0.png`` ..."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def dataset_maker(prefix: str, sample: Callable[[Path, int], fo.Sample]) -> Iterator[Callable[[list], fo.Dataset]]:
    """For a fixture: yields ``make(paths)``, a persistent dataset named ``prefix-N`` of
    ``sample(path, i)`` for each file; every dataset made is deleted afterwards."""
    made: list[fo.Dataset] = []

    def make(paths: list) -> fo.Dataset:
        name = f"{prefix}-{len(made)}"[:100]
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        dataset = fo.Dataset(name, persistent=True)
        dataset.add_samples([sample(Path(p), i) for i, p in enumerate(paths)])
        made.append(dataset)
        return dataset

    yield make
    for dataset in made:
        dataset.delete()


def run_quality(samples: Any, checkpoint: Path | str, **options: Any) -> Any:
    """:func:`compute_quality` with that checkpoint, decoding in the test's process."""
    return compute_quality(samples, checkpoint=str(checkpoint), num_workers=0, **options)
