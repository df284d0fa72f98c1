"""A pseudo-MOS comparable across distortion types, calibrated with full-reference measures.

The plain label ``5 - 0.8 * level`` says that JPEG at quality 50 and a 15 % darkening are
equally bad because both are "level 1". Instead, every (type, level) gets the mean, over
calibration references, of a perceptual FR quality that needs no downloaded weights:

    D = (1 - MS-SSIM of the luma) + mean CIEDE2000 colour difference / 60
    Q = 1 / (1 + (D / D_50) ** 1.5)               (D_50: the median D of the calibration set)
    pseudo-MOS = 1 + 4 * Q                         (5 = pristine, 3 = a median distortion)

MS-SSIM (three dyadic scales weighted 0.6, 0.25, 0.15 from the finest, on luma) measures
structural damage (blur, noise, codecs, pixelation); CIEDE2000 measures what SSIM on luma
misses (colour cast, desaturation) and adds to exposure changes. The weights were chosen
(by inspection of the per-type values on training references) so that a barely visible
change of one kind does not outweigh a heavy one of another (e.g. +8 % brightness against
a 3.5 px Gaussian blur). The table is made monotone in the level (a stronger level never
gets a better label) and is calibrated on training references only.

Not a human rating: it is a documented stand-in, used because no rated dataset may be
used for training here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bpclip_core.data.synthetic import PRISTINE_MOS

Array = np.ndarray
COLOUR_SCALE = 60.0
SCALE_WEIGHTS = (0.6, 0.25, 0.15)
EXPONENT = 1.5
CALIBRATION_REFERENCES = 40  # references that cover the table well


def _luma(image: Array) -> Array:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def ms_ssim_luma(reference: Array, distorted: Array) -> float:
    """SSIM of the luma over three dyadic scales (2x2 mean pooling between scales), weighted by
    :data:`SCALE_WEIGHTS` (finest first)."""
    from skimage.metrics import structural_similarity

    a, b = _luma(reference).astype(np.float64), _luma(distorted).astype(np.float64)
    values = []
    for _ in SCALE_WEIGHTS:
        values.append(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5))
        if min(a.shape) < 32:
            break
        height, width = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        b = b[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    weights = np.array(SCALE_WEIGHTS[: len(values)])
    return float(np.dot(weights / weights.sum(), values))


def colour_difference(reference: Array, distorted: Array) -> float:
    """Mean CIEDE2000 difference between two RGB images in [0, 1]."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    return float(deltaE_ciede2000(rgb2lab(reference), rgb2lab(distorted)).mean())


def distortion_measure(reference: Array, distorted: Array) -> float:
    """D of the module docstring: 0 for identical images, growing with visible damage."""
    return (1.0 - ms_ssim_luma(reference, distorted)) + colour_difference(reference, distorted) / COLOUR_SCALE


def gmsd(reference: Array, distorted: Array) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014) on luma: an independent FR
    measure (lower is better) used to check labels, never to make them."""
    from scipy.ndimage import convolve

    kernel = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64) / 3.0

    def magnitude(image: Array) -> Array:
        luma = _luma(image).astype(np.float64) * 255
        height, width = (luma.shape[0] // 2) * 2, (luma.shape[1] // 2) * 2
        luma = luma[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        return np.hypot(convolve(luma, kernel), convolve(luma, kernel.T))

    ref, dist = magnitude(reference), magnitude(distorted)
    c = 170.0
    similarity = (2 * ref * dist + c) / (ref**2 + dist**2 + c)
    return float(similarity.std())


def quality_from_measure(measure: float | Array, median: float) -> float | Array:
    """Q in (0, 1] from D (module docstring)."""
    return 1.0 / (1.0 + (np.asarray(measure) / median) ** EXPONENT)


class PseudoMOSTable:
    """The calibrated (type, level) -> pseudo-MOS table; callable as ``table(distortion, level)``."""

    def __init__(self, mos: dict[str, list[float]], median: float, references: int) -> None:
        self.mos = mos
        self.median = median
        self.references = references

    def __call__(self, distortion: str, level: int) -> float:
        if level == 0:
            return PRISTINE_MOS
        return self.mos[distortion][level - 1]

    def to_dict(self) -> dict:
        return {"median_measure": self.median, "references": self.references, "mos": self.mos}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> PseudoMOSTable:
        data = json.loads(Path(path).read_text())
        return cls(
            {k: [float(v) for v in vs] for k, vs in data["mos"].items()}, data["median_measure"], data["references"]
        )


def calibrate_files(files: list[Path], distortions: Iterable[str], size: int | None = None, seed: int = 0):
    """:func:`calibrate` on an evenly spaced sample of :data:`CALIBRATION_REFERENCES` image files."""
    from bpclip_core.data.synthetic import prepare_pristine

    sample = files[:: max(1, len(files) // CALIBRATION_REFERENCES)]
    return calibrate((prepare_pristine(f, size) for f in sample), distortions, seed=seed)


def calibrate(
    references: Iterable[Array], distortions: Iterable[str], levels: int = 5, seed: int = 0
) -> PseudoMOSTable:
    """Measure D for every (reference, type, level), then build the monotone table."""
    from bpclip_core.data.synthetic import distort

    names = list(distortions)
    measures: dict[str, list[list[float]]] = {name: [[] for _ in range(levels)] for name in names}
    count = 0
    for index, reference in enumerate(references):
        count += 1
        for name in names:
            for level in range(1, levels + 1):
                distorted = distort(reference, name, level, seed=seed * 1_000_003 + index)
                measures[name][level - 1].append(distortion_measure(reference, distorted))
    median = float(np.median([m for per_type in measures.values() for per_level in per_type for m in per_level]))
    table: dict[str, list[float]] = {}
    for name in names:
        quality = [float(np.mean(quality_from_measure(np.array(per_level), median))) for per_level in measures[name]]
        mos = list(np.minimum.accumulate([1.0 + 4.0 * q for q in quality]))  # monotone in the level
        table[name] = [round(float(m), 4) for m in mos]
    return PseudoMOSTable(table, median, count)
