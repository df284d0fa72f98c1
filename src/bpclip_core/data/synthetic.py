"""A synthetic-distortion generator: a KADID-like full-reference dataset from pristine images.

From any folder of pristine images, :func:`synthesize_dataset` writes
``reference/<name>.png``, ``distorted/<name>__<distortion>__<level>.png`` and
``synthetic.csv`` in the generic CSV layout (``image,mos,ref,distortion,level``), which
:func:`~bpclip_core.data.readers.read_csv_dataset` reads back.

There are 28 distortion types in seven families (blur, noise, compression, colour,
brightness/contrast, spatial, sharpness), each at 5 levels of increasing strength. Each
type names the quality dimension it harms and the adjectives that describe it
(:data:`HARMS`), which training uses to teach explanations.

Labels: by default the plain pseudo-MOS ``mos = 5 - 0.8 * level`` (4.2 .. 1.0); pass
``labels`` (e.g. the FR-metric calibrated table of :mod:`bpclip_core.data.pseudo_mos`) for
labels comparable across types. With ``include_pristine`` each reference is also an item
of its own (level 0, the best label, its own reference), so NR models see pristine pictures.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

LEVELS = 5

Array = np.ndarray  # (H, W, 3) float32 in [0, 1]
Distortion = Callable[[Array, int, np.random.Generator], Array]


def pseudo_mos(level: int) -> float:
    """The documented pseudo-MOS of a distortion level (1 mildest .. 5 strongest): 5 - 0.8 * level."""
    if not 1 <= level <= LEVELS:
        raise ValueError(f"level must be in 1..{LEVELS}, got {level}")
    return 5.0 - 0.8 * level


# ---------------------------------------------------------------------------- helpers


def _to_pil(image: Array):
    from PIL import Image

    return Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_pil(picture) -> Array:
    return np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0


def _pil_filter(image: Array, make_filter) -> Array:
    return _from_pil(_to_pil(image).filter(make_filter))


def _luma(image: Array) -> Array:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resample(image: Array, factor: float, method: str) -> Array:
    from PIL import Image

    picture = _to_pil(image)
    width, height = picture.size
    small = picture.resize((max(1, round(width / factor)), max(1, round(height / factor))), Image.Resampling.BILINEAR)
    back = small.resize((width, height), getattr(Image.Resampling, method))
    return _from_pil(back)


# ---------------------------------------------------------------------------- blur


def gaussian_blur(image: Array, level: int, rng: np.random.Generator) -> Array:
    from PIL import ImageFilter

    return _pil_filter(image, ImageFilter.GaussianBlur((0.5, 1.0, 1.6, 2.4, 3.5)[level - 1]))


def box_blur(image: Array, level: int, rng: np.random.Generator) -> Array:
    from PIL import ImageFilter

    return _pil_filter(image, ImageFilter.BoxBlur((1, 2, 3, 4, 6)[level - 1]))


def motion_blur(image: Array, level: int, rng: np.random.Generator) -> Array:
    length = (3, 5, 7, 11, 15)[level - 1]
    shifts = range(-(length // 2), length // 2 + 1)
    return np.mean([np.roll(image, s, axis=1) for s in shifts], axis=0)


def lens_blur(image: Array, level: int, rng: np.random.Generator) -> Array:
    radius = (1, 2, 3, 4, 5)[level - 1]
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    disc = [(dy, dx) for dy, dx in offsets if dy * dy + dx * dx <= radius * radius]
    return np.mean([np.roll(image, (dy, dx), axis=(0, 1)) for dy, dx in disc], axis=0)


# ---------------------------------------------------------------------------- noise


def gaussian_noise(image: Array, level: int, rng: np.random.Generator) -> Array:
    sigma = (0.02, 0.04, 0.07, 0.11, 0.16)[level - 1]
    return image + rng.normal(0, sigma, image.shape).astype(np.float32)


def colour_noise(image: Array, level: int, rng: np.random.Generator) -> Array:
    sigma = (0.02, 0.04, 0.07, 0.11, 0.16)[level - 1]
    noise = rng.normal(0, sigma, (*image.shape[:2], 2)).astype(np.float32)
    chroma = np.stack([noise[..., 0], -(noise[..., 0] + noise[..., 1]) / 2, noise[..., 1]], axis=-1)
    return image + chroma


def impulse_noise(image: Array, level: int, rng: np.random.Generator) -> Array:
    amount = (0.01, 0.03, 0.06, 0.1, 0.16)[level - 1]
    out = image.copy()
    hits = rng.random(image.shape[:2])
    out[hits < amount / 2] = 0.0
    out[hits > 1 - amount / 2] = 1.0
    return out


def speckle_noise(image: Array, level: int, rng: np.random.Generator) -> Array:
    sigma = (0.06, 0.12, 0.2, 0.3, 0.45)[level - 1]
    return image * (1 + rng.normal(0, sigma, image.shape).astype(np.float32))


def poisson_noise(image: Array, level: int, rng: np.random.Generator) -> Array:
    photons = (200.0, 80.0, 30.0, 12.0, 5.0)[level - 1]
    return (rng.poisson(np.clip(image, 0, 1) * photons) / photons).astype(np.float32)


# ---------------------------------------------------------------------------- compression


def jpeg_compression(image: Array, level: int, rng: np.random.Generator) -> Array:
    from PIL import Image

    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=(50, 30, 18, 10, 5)[level - 1])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _from_pil(decoded)


def colour_quantisation(image: Array, level: int, rng: np.random.Generator) -> Array:
    colours = (64, 32, 16, 8, 4)[level - 1]
    return _from_pil(_to_pil(image).quantize(colours, dither=0).convert("RGB"))


def bit_depth_reduction(image: Array, level: int, rng: np.random.Generator) -> Array:
    steps = (32, 16, 8, 5, 3)[level - 1]
    return np.round(image * (steps - 1)) / (steps - 1)


# ---------------------------------------------------------------------------- colour


def desaturate(image: Array, level: int, rng: np.random.Generator) -> Array:
    keep = (0.8, 0.6, 0.4, 0.2, 0.0)[level - 1]
    grey = _luma(image)[..., None]
    return grey + keep * (image - grey)


def oversaturate(image: Array, level: int, rng: np.random.Generator) -> Array:
    gain = (1.4, 1.8, 2.3, 3.0, 4.0)[level - 1]
    grey = _luma(image)[..., None]
    return grey + gain * (image - grey)


def colour_cast(image: Array, level: int, rng: np.random.Generator) -> Array:
    strength = (0.04, 0.08, 0.13, 0.19, 0.26)[level - 1]
    return image + np.array([strength, 0.0, -strength], dtype=np.float32)


def channel_shift(image: Array, level: int, rng: np.random.Generator) -> Array:
    shift = (1, 2, 3, 5, 7)[level - 1]
    out = image.copy()
    out[..., 0] = np.roll(image[..., 0], shift, axis=1)
    out[..., 2] = np.roll(image[..., 2], -shift, axis=0)
    return out


# ---------------------------------------------------------------------------- brightness / contrast


def brighten(image: Array, level: int, rng: np.random.Generator) -> Array:
    return image + (0.08, 0.16, 0.25, 0.35, 0.47)[level - 1]


def darken(image: Array, level: int, rng: np.random.Generator) -> Array:
    return image * (0.85, 0.7, 0.55, 0.4, 0.27)[level - 1]


def contrast_decrease(image: Array, level: int, rng: np.random.Generator) -> Array:
    keep = (0.75, 0.55, 0.4, 0.27, 0.15)[level - 1]
    return image.mean() + keep * (image - image.mean())


def contrast_increase(image: Array, level: int, rng: np.random.Generator) -> Array:
    gain = (1.3, 1.6, 2.0, 2.5, 3.2)[level - 1]
    return 0.5 + gain * (image - 0.5)


# ---------------------------------------------------------------------------- spatial


def pixelate(image: Array, level: int, rng: np.random.Generator) -> Array:
    return _resample(image, (1.5, 2, 3, 4, 6)[level - 1], "NEAREST")


def downsample_upsample(image: Array, level: int, rng: np.random.Generator) -> Array:
    return _resample(image, (1.5, 2, 2.5, 3.5, 5)[level - 1], "BILINEAR")


def jitter(image: Array, level: int, rng: np.random.Generator) -> Array:
    reach = (1, 1, 2, 3, 4)[level - 1]
    fraction = (0.2, 0.5, 0.5, 0.6, 0.7)[level - 1]
    height, width = image.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    move = rng.random((height, width)) < fraction
    dy = rng.integers(-reach, reach + 1, (height, width)) * move
    dx = rng.integers(-reach, reach + 1, (height, width)) * move
    return image[np.clip(rows + dy, 0, height - 1), np.clip(cols + dx, 0, width - 1)]


def block_shuffle(image: Array, level: int, rng: np.random.Generator) -> Array:
    """Non-eccentricity patches: copies of small blocks moved to nearby places."""
    count = (2, 4, 7, 11, 16)[level - 1]
    height, width = image.shape[:2]
    block = max(2, min(height, width) // 10)
    out = image.copy()
    for _ in range(count):
        y, x = rng.integers(0, height - block), rng.integers(0, width - block)
        ty = int(np.clip(y + rng.integers(-block, block + 1), 0, height - block))
        tx = int(np.clip(x + rng.integers(-block, block + 1), 0, width - block))
        out[ty : ty + block, tx : tx + block] = image[y : y + block, x : x + block]
    return out


# ---------------------------------------------------------------------------- sharpness


def webp_compression(image: Array, level: int, rng: np.random.Generator) -> Array:
    from PIL import Image

    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="WEBP", quality=(40, 22, 12, 5, 1)[level - 1], method=4)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _from_pil(decoded)


def haze(image: Array, level: int, rng: np.random.Generator) -> Array:
    """Veiling glare: a blend towards a bright grey airlight (lower contrast, lifted blacks)."""
    veil = (0.15, 0.3, 0.45, 0.6, 0.75)[level - 1]
    return (1 - veil) * image + veil * 0.85


def overexpose(image: Array, level: int, rng: np.random.Generator) -> Array:
    """Exposure gain with clipped highlights."""
    return image * (1.4, 1.8, 2.3, 3.0, 4.0)[level - 1]


def oversharpen(image: Array, level: int, rng: np.random.Generator) -> Array:
    from PIL import ImageFilter

    amount = (80, 160, 260, 380, 520)[level - 1]
    return _pil_filter(image, ImageFilter.UnsharpMask(radius=2, percent=amount, threshold=0))


DISTORTIONS: dict[str, tuple[str, Distortion]] = {
    "gaussian_blur": ("blur", gaussian_blur),
    "box_blur": ("blur", box_blur),
    "motion_blur": ("blur", motion_blur),
    "lens_blur": ("blur", lens_blur),
    "gaussian_noise": ("noise", gaussian_noise),
    "colour_noise": ("noise", colour_noise),
    "impulse_noise": ("noise", impulse_noise),
    "speckle_noise": ("noise", speckle_noise),
    "poisson_noise": ("noise", poisson_noise),
    "jpeg": ("compression", jpeg_compression),
    "colour_quantisation": ("compression", colour_quantisation),
    "bit_depth_reduction": ("compression", bit_depth_reduction),
    "desaturate": ("colour", desaturate),
    "oversaturate": ("colour", oversaturate),
    "colour_cast": ("colour", colour_cast),
    "channel_shift": ("colour", channel_shift),
    "brighten": ("brightness_contrast", brighten),
    "darken": ("brightness_contrast", darken),
    "contrast_decrease": ("brightness_contrast", contrast_decrease),
    "contrast_increase": ("brightness_contrast", contrast_increase),
    "pixelate": ("spatial", pixelate),
    "downsample_upsample": ("spatial", downsample_upsample),
    "jitter": ("spatial", jitter),
    "block_shuffle": ("spatial", block_shuffle),
    "oversharpen": ("sharpness", oversharpen),
    "webp": ("compression", webp_compression),
    "haze": ("brightness_contrast", haze),
    "overexpose": ("brightness_contrast", overexpose),
}

# The quality dimension each type harms (see adjectives.DIMENSIONS) and the bad adjectives
# that describe it; "overall quality" marks types with no dimension of their own.
HARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gaussian_blur": ("sharpness", ("blurry", "out-of-focus")),
    "box_blur": ("sharpness", ("blurry", "out-of-focus")),
    "motion_blur": ("sharpness", ("blurry",)),
    "lens_blur": ("sharpness", ("out-of-focus", "blurry")),
    "gaussian_noise": ("noisiness", ("noisy", "grainy")),
    "colour_noise": ("noisiness", ("noisy", "speckled")),
    "impulse_noise": ("noisiness", ("speckled", "noisy")),
    "speckle_noise": ("noisiness", ("speckled", "grainy")),
    "poisson_noise": ("noisiness", ("grainy", "noisy")),
    "jpeg": ("sharpness", ("blocky",)),
    "webp": ("sharpness", ("blurry", "blocky")),
    "colour_quantisation": ("overall quality", ("distorted",)),
    "bit_depth_reduction": ("overall quality", ("distorted",)),
    "desaturate": ("colorfulness", ("colorless", "washed-out", "dull")),
    "oversaturate": ("overall quality", ("distorted",)),
    "colour_cast": ("colorfulness", ("dull",)),
    "channel_shift": ("overall quality", ("distorted",)),
    "brighten": ("brightness", ("overexposed",)),
    "overexpose": ("brightness", ("overexposed",)),
    "darken": ("brightness", ("dark", "underexposed")),
    "contrast_decrease": ("contrast", ("low-contrast", "flat")),
    "haze": ("contrast", ("hazy", "low-contrast")),
    "contrast_increase": ("overall quality", ("distorted",)),
    "pixelate": ("sharpness", ("pixelated",)),
    "downsample_upsample": ("sharpness", ("blurry", "pixelated")),
    "jitter": ("overall quality", ("distorted",)),
    "block_shuffle": ("overall quality", ("distorted",)),
    "oversharpen": ("overall quality", ("distorted",)),
}

# The realistic types the bundled models learn (codecs, blurs, noises, exposure, contrast,
# saturation, colour cast, pixelation, quantisation, ringing).
REALISTIC: tuple[str, ...] = (
    "gaussian_blur", "motion_blur", "lens_blur", "gaussian_noise", "colour_noise", "impulse_noise",
    "speckle_noise", "poisson_noise", "jpeg", "webp", "colour_quantisation", "bit_depth_reduction",
    "desaturate", "colour_cast", "brighten", "overexpose", "darken", "contrast_decrease", "haze",
    "pixelate", "downsample_upsample", "oversharpen",
)  # fmt: skip
PRISTINE = "pristine"
PRISTINE_MOS = 5.0  # the label of an undistorted reference, the top of every label scale


def distort(image: Array, distortion: str, level: int, seed: int = 0) -> Array:
    """Apply one distortion at ``level`` (1..5) to an (H, W, 3) float image in [0, 1]."""
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; choose from {sorted(DISTORTIONS)}")
    if not 1 <= level <= LEVELS:
        raise ValueError(f"level must be in 1..{LEVELS}, got {level}")
    rng = np.random.default_rng(seed)
    return np.clip(DISTORTIONS[distortion][1](image.astype(np.float32), level, rng), 0, 1).astype(np.float32)


def prepare_pristine(path: Path, size: int | None) -> Array:
    """A pristine image as float RGB; with ``size``, short side resized to it and centre-cropped square."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    if size is not None:
        picture = ImageOps.fit(picture, (size, size), Image.Resampling.BICUBIC)
    return _from_pil(picture)


def synthesize_dataset(
    sources: str | Path | Sequence[str | Path],
    out: str | Path,
    distortions: Sequence[str] | None = None,
    levels: Sequence[int] = tuple(range(1, LEVELS + 1)),
    size: int | None = None,
    seed: int = 0,
    labels: Callable[[str, int], float] | None = None,
    types_per_reference: int | None = None,
    include_pristine: bool = False,
) -> Path:
    """Write a KADID-like FR dataset from pristine images; returns the CSV's path.

    Args:
        sources: a folder of pristine images (searched recursively) or a list of files.
        out: the output folder (``reference/``, ``distorted/``, ``synthetic.csv``).
        distortions: names from ``DISTORTIONS`` (default: all 25).
        levels: which of the levels 1..5 to write.
        size: resize (short side) and centre-crop every pristine image to ``size`` x ``size``.
        seed: seeds the random distortions (each image/type/level gets its own stream).
        labels: (distortion, level) -> MOS; default the plain :func:`pseudo_mos` of the level.
        types_per_reference: give each reference a seeded random subset of this many types.
        include_pristine: also list each reference as an item (level 0, ``distortion`` pristine).
    """
    from bpclip_core.inputs.decoding import image_files

    files = image_files([sources] if isinstance(sources, str | Path) else sources)
    if not files:
        raise ValueError(f"no pristine images found in {sources}")
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        raise ValueError("pristine images must have distinct file names (stems)")
    chosen = list(distortions or DISTORTIONS)
    for name in chosen:
        if name not in DISTORTIONS:
            raise ValueError(f"unknown distortion {name!r}; choose from {sorted(DISTORTIONS)}")
    out = Path(out)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    (out / "distorted").mkdir(parents=True, exist_ok=True)
    label = labels or (lambda distortion, level: pseudo_mos(level))
    rows = []
    for file in files:
        pristine = prepare_pristine(file, size)
        reference = f"reference/{file.stem}.png"
        _to_pil(pristine).save(out / reference)
        if include_pristine:
            rows.append([reference, f"{PRISTINE_MOS:.4f}", reference, PRISTINE, 0])
        types = chosen
        if types_per_reference is not None and types_per_reference < len(chosen):
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}|{file.stem}".encode()).digest()[:8]))
            types = [chosen[i] for i in sorted(rng.choice(len(chosen), types_per_reference, replace=False))]
        for distortion in types:
            for level in levels:
                key = f"{seed}|{file.stem}|{distortion}|{level}".encode()
                stream = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
                image = f"distorted/{file.stem}__{distortion}__{level}.png"
                _to_pil(distort(pristine, distortion, level, stream)).save(out / image)
                rows.append([image, f"{label(distortion, level):.4f}", reference, distortion, level])
    csv_path = out / "synthetic.csv"
    partial = out / ".synthetic.csv.partial"
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos", "ref", "distortion", "level"])
        writer.writerows(rows)
    partial.replace(csv_path)
    return csv_path
