"""Input preparation: what the engine's inputs are, how they pair, and their views on the CPU.

- :func:`expand_inputs`: files, folders, PIL images, arrays and tensors as a flat list of
  single-image sources (folders expanded, batches split);
- :func:`pair_references`: one reference per input for FR scoring (by relative path, then
  suffix, then name or stem; ambiguity is an error, never a guess);
- :func:`to_image_tensor`: any single source as a checked (3, H, W) float tensor in [0, 1];
- :class:`PreparedViews`: the CPU pipeline's dataset, run in DataLoader workers: each input
  decoded and cut into the protocol's views (the device pipeline is in device_pipeline.py);
  :func:`pair_decode_side` makes both images of an FR pair decode at one scale.

Whatever one input raises becomes that input's error (:func:`error_text`); the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bpclip_core.errors import BPCLIPError, InputError
from bpclip_core.inputs.checks import check_dtype, check_images, check_min_side, refuse_dtype
from bpclip_core.inputs.decoding import (
    ScanProblem,
    default_max_pixels,
    find_images,
    header_size,
    load_image,
    pil_to_tensor,
)
from bpclip_core.inputs.protocol import TestTimeProtocol, pair_size_error


def input_label(source: Any, index: int) -> str:
    """How results name an input: its path, or its type and position (``<ndarray #3>``)."""
    return str(source) if isinstance(source, (str, Path, ScanProblem)) else f"<{type(source).__name__} #{index}>"


_ATOMIC_TYPES = (str, Path, bytes, bytearray, memoryview, Mapping)  # one input each, never iterated


def to_image_tensor(
    source: Any, min_short_side: int | None = None, data_range: float = 1.0, max_pixels: int | None = None
) -> torch.Tensor:
    """Any supported single-image source as a (3, H, W) float tensor in [0, 1].

    Args:
        source: a file path, PIL image, numpy array (H, W[, C]) or tensor (3, H, W).
        min_short_side: files may be decoded at a reduced scale that keeps this short side
            (:func:`~bpclip_core.inputs.decoding.reduction_factor`); in-memory images are taken as they are.
        data_range: the value of white for float (and non-uint8 integer) arrays and tensors;
            uint8 data is always read as 0..255 and uint16 arrays as 0..65535.
        max_pixels: the pixel limit of image files (default :func:`default_max_pixels`).
    Raises:
        InputError: an object that is not an image, or values that are not one.
    """
    if isinstance(source, (str, Path)):
        image = load_image(source, min_short_side, max_pixels)
        check_min_side(image, f"{source}: image")  # the error names the file, not "images"
        return image
    if isinstance(source, torch.Tensor):
        image, scale = tensor_as_float(source)
    elif isinstance(source, np.ndarray):
        image, scale = _array_as_float(source)
    elif hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
        image, scale = pil_to_tensor(source), 1.0
    else:
        hint = (
            " (for encoded image bytes: PIL.Image.open(io.BytesIO(data)))"
            if isinstance(source, (bytes, bytearray, memoryview))
            else ""
        )
        raise InputError(
            f"cannot score an object of type {type(source).__name__}: pass a path, PIL image, array or tensor{hint}"
        )
    return check_images(image, "image", data_range if scale is None else scale)[0]


def tensor_as_float(source: torch.Tensor, device: torch.device | None = None) -> tuple[torch.Tensor, float | None]:
    """A tensor as float32 (on the CPU, or on ``device``) and its white value (None: the caller's data_range).

    The dtype rules are :func:`~bpclip_core.inputs.checks.check_dtype`'s (meta, complex, bool refused).
    """
    image = check_dtype(source.detach(), "a tensor")
    scale = {torch.uint8: 255.0, getattr(torch, "uint16", torch.uint8): 65535.0}.get(source.dtype)
    return image.to(device or "cpu").float(), scale


def _array_as_float(source: np.ndarray) -> tuple[torch.Tensor, float | None]:
    """An (H, W[, C]) array as a (3, H, W) float32 tensor and its white value."""
    if source.dtype.kind not in "biuf":
        if source.dtype.kind == "c":
            refuse_dtype("an array", source.dtype, True, False)
        raise InputError(f"an array of dtype {source.dtype} cannot be scored: pass uint8 or float image data")
    refuse_dtype("an array", source.dtype, False, source.dtype.kind == "b")
    array = source
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"numpy images must be (H, W), (H, W, 3) or (H, W, 4), got {source.shape}")
    if array.shape[2] == 1:
        array = array.repeat(3, axis=2)
    array = array[..., :3]
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
    image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
    return image, scale


def expand_with_roots(inputs: Any) -> list[tuple[Any, Path | None]]:
    """Like :func:`expand_inputs`, each source with the folder it was found in (None: given directly)."""
    if isinstance(inputs, _ATOMIC_TYPES) or not isinstance(inputs, Iterable) or hasattr(inputs, "convert"):
        inputs = [inputs]
    elif isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = list(inputs) if inputs.ndim == 4 else [inputs]
    out: list[tuple[Any, Path | None]] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            found = find_images([item])
            # a folder with no images (or named like one, x.jpg) stays an input: it is reported
            if found:
                out.extend((p, Path(item)) for p in found)
            else:
                out.append((Path(item), None))
        elif isinstance(item, torch.Tensor) and item.ndim == 4:
            out.extend((t, None) for t in item)
        else:
            out.append((item, None))
    return out


def expand_inputs(inputs: Any) -> list[Any]:
    """A flat list of single-image sources: folders are expanded, batches are split.

    A folder that holds no image files is kept as one input, which fails with a clear error.
    """
    return [source for source, _ in expand_with_roots(inputs)]


def is_empty_folder(source: Any) -> bool:
    """Whether an expanded source is a folder in which no image files were found."""
    return isinstance(source, (str, Path)) and Path(source).is_dir()


@dataclass(frozen=True)
class Unpaired:
    """The reference of an input that has none, and why (see :func:`pair_references`)."""

    reason: str


def pair_references(sources: Sequence[Any], references: Any, roots: Sequence[Path | None] | None = None) -> list[Any]:
    """One reference per input: a folder, a single image for all, or a list of one per input.

    A reference folder is matched to each file input by its path relative to the folder it
    was found in (``roots``; an input given directly counts as top level): the same relative
    path, then the same relative path with another suffix, then a top-level reference of
    the same name or stem; a top-level input may also match a reference anywhere by name or
    stem when exactly one has it. Inputs without a (unique) match get :class:`Unpaired`
    with the reason: an ambiguous name is never guessed.
    """
    if references is None:
        return [None] * len(sources)
    if isinstance(references, (str, Path)) and Path(references).is_dir():
        return _pair_with_folder(sources, roots or [None] * len(sources), Path(references))
    expanded = expand_inputs(references)
    if len(expanded) == 1:
        return expanded * len(sources)
    if len(expanded) != len(sources):
        raise InputError(f"got {len(sources)} images but {len(expanded)} references; pass one per image or one for all")
    return expanded


def _pair_with_folder(sources: Sequence[Any], roots: Sequence[Path | None], folder: Path) -> list[Any]:
    files = [p for p in find_images([folder]) if isinstance(p, Path)]  # image suffixes only
    by_rel = {p.relative_to(folder): p for p in files}
    by_rel_stem: dict[Path, list[Path]] = defaultdict(list)
    by_name: dict[str, list[Path]] = defaultdict(list)
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for rel, path in by_rel.items():
        by_rel_stem[rel.with_suffix("")].append(path)
        by_name[rel.name].append(path)
        by_stem[Path(rel.name).stem].append(path)

    def unique(candidates: list[Path], what: str) -> Path | Unpaired | None:
        if len(candidates) > 1:
            shown = ", ".join(str(c) for c in candidates[:4]) + (", ..." if len(candidates) > 4 else "")
            return Unpaired(f"ambiguous reference: {len(candidates)} references {what} ({shown})")
        return candidates[0] if candidates else None

    def match(source: Any, root: Path | None) -> Path | Unpaired:
        if not isinstance(source, (str, Path)):
            return Unpaired("only file inputs can be paired with a reference folder")
        path = Path(source)
        rel = path.relative_to(root) if root is not None else Path(path.name)
        top_level = rel.parent == Path(".")
        stem = f"are named {path.stem}.*"
        steps: list[tuple[list[Path], str]] = [
            ([by_rel[rel]] if rel in by_rel else [], ""),
            (by_rel_stem.get(rel.with_suffix(""), []), f"match {rel.with_suffix('')}.*"),
            ([p for p in by_name.get(rel.name, []) if p.parent == folder], ""),
            ([p for p in by_stem.get(path.stem, []) if p.parent == folder], stem),
        ]
        if top_level:  # an input given directly may find its reference in any subfolder
            steps += [(by_name.get(rel.name, []), f"are named {rel.name}"), (by_stem.get(path.stem, []), stem)]
        for candidates, what in steps:
            found = unique(candidates, what)
            if found is not None:
                return found
        elsewhere = by_name.get(rel.name) or by_stem.get(path.stem)
        if elsewhere:
            return Unpaired(
                f"no reference image at {folder / rel} (references are matched by relative path; "
                f"a reference of that name is in another subfolder: {elsewhere[0]})"
            )
        return Unpaired(f"no reference image found for this image in {folder}")

    return [match(source, root) for source, root in zip(sources, roots)]


def error_text(exc: Exception) -> str:
    """The error one input gets for ``exc``: our own messages as they are, others with their type."""
    return str(exc) if isinstance(exc, BPCLIPError) else f"{type(exc).__name__}: {exc}"


class PairedInputs(Dataset):
    """Input ``i`` and its reference, checked as a pair, then prepared by :meth:`prepare`.

    Items are ``(index, image, reference, error)``: what :meth:`prepare` made of the pair,
    or ``(index, None, None, message)`` for an input that failed. Runs in DataLoader workers
    when files are involved.
    """

    def __init__(
        self,
        sources: list[Any],
        references: list[Any],
        protocol: TestTimeProtocol,
        needs_reference: bool,
        data_range: float = 1.0,
        max_pixels: int | None = None,
    ):
        self.sources, self.references = sources, references
        self.protocol, self.needs_reference = protocol, needs_reference
        self.data_range = data_range
        limit = default_max_pixels() if max_pixels is None else max_pixels
        # the 'full' protocol keeps images as they are: its own limit is checked before decoding too
        self.max_pixels = min(limit, protocol.max_pixels) if protocol.decode_short_side is None else limit

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any, Any, str | None]:
        try:
            source, reference = self.sources[index], self.references[index]
            if is_empty_folder(source):
                raise InputError(f"{source}: is a folder with no image files in it")
            if isinstance(source, ScanProblem):
                raise InputError(source.reason)
            if isinstance(reference, Unpaired):
                raise InputError(reference.reason)
            if self.needs_reference and reference is None:
                raise InputError("no reference image found for this image")
            if not self.needs_reference and reference is not None:
                raise InputError("a no-reference model takes no reference image")
            return index, *self.prepare(source, reference), None
        except Exception as exc:  # anything that one input raises is that input's error
            return index, None, None, error_text(exc)

    def prepare(self, source: Any, reference: Any) -> tuple[Any, Any]:
        """What the engine receives for one checked pair (``reference`` None for NR)."""
        raise NotImplementedError


def pair_decode_side(source: Any, reference: Any, short_side: int | None, max_pixels: int | None) -> int | None:
    """The short side to decode an input and its reference with (``short_side`` is the protocol's).

    NR inputs and FR pairs of two files keep ``short_side``: the reduction depends on a file's
    size alone, so files of one size decode to one size whatever their formats. An FR pair
    of two files of different sizes is refused from their headers, before decoding (the
    sizes shown are the files' own, not reduced ones); a file paired with an in-memory image
    is decoded at full scale, as that image is taken.
    """
    if reference is None or short_side is None:
        return short_side
    if not (isinstance(source, (str, Path)) and isinstance(reference, (str, Path))):
        return None
    sizes = [header_size(path, max_pixels)[::-1] for path in (source, reference)]  # (height, width)
    if sizes[0] != sizes[1]:
        raise pair_size_error(*sizes)
    return short_side


class PreparedViews(PairedInputs):
    """The CPU pipeline: each input decoded to float and cut into the protocol's (V, 3, h, w) views."""

    def prepare(self, source: Any, reference: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        short = pair_decode_side(source, reference, self.protocol.decode_short_side, self.max_pixels)
        image = to_image_tensor(source, short, self.data_range, self.max_pixels)
        if reference is not None:
            reference = to_image_tensor(reference, short, self.data_range, self.max_pixels)
        return self.protocol.pair_views(image, reference)


def single_thread_worker(_: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per decoding worker."""
    torch.set_num_threads(1)  # decoding workers must not compete with the model for cores
