"""A corpus of hostile inputs, generated into a folder: each file breaks something on purpose.

``build_image_corpus(folder)`` writes good images beside bad ones and returns a table
``name -> Case`` saying what each should give: a score, or an error containing a phrase.
``hostile_checkpoint(...)`` writes a checkpoint with one thing wrong. Everything is small
(the biggest file is a few KB): huge images are headers that claim a huge size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features


@dataclass(frozen=True)
class Case:
    """What one corpus entry must give: ``error`` None for a score, else a phrase of its error."""

    path: Path
    error: str | None


def _random_rgb(height: int = 70, width: int = 90, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR header is rewritten to claim ``width`` x ``height``."""
    Image.fromarray(_random_rgb(40, 40)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR CRC stays valid
    path.write_bytes(bytes(data))
    return path


def tiff_with_flipped_size(path: Path) -> Path:
    """A TIFF with one header field flipped: its ImageWidth and ImageLength claim 65535 px."""
    Image.fromarray(_random_rgb(40, 40)).save(path)
    data = bytearray(path.read_bytes())
    for tag in (256, 257):
        for kind in (3, 4):  # SHORT or LONG
            at = data.find(struct.pack("<HHI", tag, kind, 1))
            if at >= 0:
                data[at + 8 : at + 12] = struct.pack("<HH", 0xFFFF, 0) if kind == 3 else struct.pack("<I", 0xFFFF)
                break
    path.write_bytes(bytes(data))
    return path


def float_tiff(path: Path, low: float = 0.0, high: float = 1.0) -> Path:
    """A float32 (PIL mode ``F``) grayscale TIFF with a ramp from ``low`` to ``high``."""
    ramp = np.linspace(low, high, 64 * 80, dtype=np.float32).reshape(64, 80)
    Image.fromarray(ramp, mode="F").save(path)
    return path


def sixteen_bit_png(path: Path) -> Path:
    """A 16-bit grayscale PNG (PIL mode ``I;16``) with a dark ramp (all values under 256)."""
    ramp = np.linspace(0, 200, 64 * 80).reshape(64, 80).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return path


def int32_tiff(path: Path, peak: int = 65535, max_sample_value: int | None = None) -> Path:
    """A 32-bit integer (PIL mode ``I``) grayscale TIFF with a ramp up to ``peak``, declaring
    ``max_sample_value`` (the TIFF MaxSampleValue tag, its white) when given."""
    ramp = np.linspace(0, peak, 64 * 80).reshape(64, 80).astype(np.int32)
    tags = {} if max_sample_value is None else {281: max_sample_value}
    Image.fromarray(ramp, mode="I").save(path, tiffinfo=tags)
    return path


def heif_photo(path: Path) -> Path:
    """A small HEIF photo, written through pillow-heif when it is installed, else a file
    that only a HEIF decoder could read (its ``ftyp heic`` box and nothing else)."""
    try:
        import pillow_heif
    except ImportError:
        path.write_bytes(struct.pack(">I", 24) + b"ftypheic" + b"\0" * 4 + b"mif1heic")
        return path
    pillow_heif.register_heif_opener()
    Image.fromarray(_random_rgb(seed=8)).save(path, quality=90)
    return path


def named_bytes(folder: Path, name: bytes) -> Path:
    """A good PNG under a raw byte name (e.g. Latin-1, not UTF-8): its str path is surrogate-escaped."""
    target = os.path.join(os.fsencode(folder), name)
    Image.fromarray(_random_rgb(seed=7)).save(folder / "tmp-named.png")
    os.replace(folder / "tmp-named.png", target)
    return Path(os.fsdecode(target))


def build_image_corpus(folder: Path, fifo: bool = True) -> dict[str, Case]:
    """Write the hostile image corpus (and two good images) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def add(name: str, path: Path, error: str | None) -> None:
        cases[name] = Case(path, error)

    for i, name in enumerate(("good_a.png", "good_b.jpg")):
        Image.fromarray(_random_rgb(seed=i)).save(folder / name)
        add(name, folder / name, None)
    add("bomb.png", png_claiming_size(folder / "bomb.png", 30000, 30000), "pixel limit")
    add("bomb_under_pil.png", png_claiming_size(folder / "bomb_under_pil.png", 13000, 13000), "pixel limit")
    add("flipped.tif", tiff_with_flipped_size(folder / "flipped.tif"), "pixel limit")
    add("float.tif", float_tiff(folder / "float.tif"), None)
    add("float_out_of_range.tif", float_tiff(folder / "float_out_of_range.tif", 0, 300), "[0, 1]")
    add("dark16.png", sixteen_bit_png(folder / "dark16.png"), None)
    add("int32.tif", int32_tiff(folder / "int32.tif"), "no declared white level")  # never a guess
    add("int32_declared.tif", int32_tiff(folder / "int32_declared.tif", max_sample_value=65535), None)
    # 32 x 4,000,000 px: under the pixel limit, but it would reach the network at full length
    add("strip.png", png_claiming_size(folder / "strip.png", 32, 4_000_000), "times its short side")
    heif = importlib.util.find_spec("pillow_heif") is not None
    add("photo.heic", heif_photo(folder / "photo.heic"), None if heif else "pillow-heif")
    Image.fromarray(_random_rgb(seed=3)).save(folder / "photo.jfif", format="JPEG")
    add("photo.jfif", folder / "photo.jfif", None)
    if features.check("avif"):
        Image.fromarray(_random_rgb(seed=4)).save(folder / "photo.avif")
        add("photo.avif", folder / "photo.avif", None)
    folder_named_jpg = folder / "sub.jpg"
    folder_named_jpg.mkdir()
    Image.fromarray(_random_rgb(seed=5)).save(folder_named_jpg / "inside.png")
    add("inside.png", folder_named_jpg / "inside.png", None)  # a folder named x.jpg is searched, not dropped
    (folder / "empty.jpg").mkdir()
    add("empty.jpg", folder / "empty.jpg", "folder")  # ... and an empty one is reported, not dropped
    add("caf\udce9.png", named_bytes(folder, b"caf\xe9.png"), None)
    Image.fromarray(_random_rgb(seed=6)).save(folder / "new\nline.png")
    add("new\nline.png", folder / "new\nline.png", None)
    if fifo and hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.jpg")
        add("pipe.jpg", folder / "pipe.jpg", "FIFO")
    (folder / "zero.png").write_bytes(b"")
    add("zero.png", folder / "zero.png", "is an empty file")
    elsewhere = folder.parent / f"{folder.name}-linked-target"
    elsewhere.mkdir(exist_ok=True)
    Image.fromarray(_random_rgb(seed=9)).save(elsewhere / "behind_link.png")
    os.symlink(elsewhere, folder / "linked")
    add("behind_link.png", folder / "linked" / "behind_link.png", None)  # a symlinked folder is searched
    os.symlink(".", folder / "loop")
    add("loop", folder / "loop", "scanned already")  # a loop is entered once, and reported
    return cases


def hostile_checkpoint(good: Path, out: Path, *, config=None, tensors=None, score_scale=None) -> Path:
    """A copy of the checkpoint ``good`` with its config, tensors or score scale changed.

    ``config``: a dict of config fields to change, or any JSON value to replace the config;
    ``tensors``: a function that changes the dict of tensors in place.
    """
    from safetensors.torch import load_file, save_file

    from bpclip_core.weights.checkpoint import METADATA_KEY, read_metadata

    metadata = read_metadata(good)
    if isinstance(config, dict):
        metadata["config"].update(config)
    elif config is not None:
        metadata["config"] = config
    if score_scale is not None:
        metadata["score_scale"].update(score_scale)
    state = load_file(str(good))
    if tensors is not None:
        tensors(state)
    text = json.dumps(metadata)  # json writes Infinity for an infinite scale, as a hostile file would
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={METADATA_KEY: text})
    return out


def tiny_tensor_checkpoint(good: Path, out: Path, **config) -> Path:
    """A few-KB checkpoint whose config declares big layers but whose tensors are all 1 element."""
    from safetensors.torch import load_file, save_file

    from bpclip_core.weights.checkpoint import METADATA_KEY, read_metadata

    metadata = read_metadata(good)
    metadata["config"].update(config)
    state = {name: torch.zeros(1, dtype=t.dtype) for name, t in load_file(str(good)).items()}
    save_file(state, str(out), metadata={METADATA_KEY: json.dumps(metadata)})
    return out
