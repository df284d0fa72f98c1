"""The inference engine every front end uses: any input, batched, on any device.

Inputs: file paths, folders, PIL images, numpy arrays (H, W[, C]) and tensors in [0, 1]
((3, H, W) or (N, 3, H, W)), for NR and for FR pairs. Files are decoded in DataLoader
workers while the model runs; the device is picked automatically (cuda, mps, cpu); GPUs run
in bf16/fp16 autocast; the attention blocks are compiled (TorchScript by default). For
inference the backbone runs with its frozen BatchNorm folded into the convolutions and, on
CPU and CUDA, in channels_last layout (both measured in benchmarks/RESULTS.md).

One bad input (unreadable, not a regular file, over the pixel limit, too small, no FR
partner, NaN, a non-finite score, an object that is no image) gives an error for that
input alone; every other input is still scored.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .backbone import fold_frozen_batchnorm
from .checkpoint import load_checkpoint
from .choices import ATTENTION_BACKENDS, DEFAULT_ATTENTION, PRECISIONS
from .errors import BPCLIPError, DeviceError, InputError
from .explain import explain
from .images import IMAGE_SUFFIXES, default_max_pixels, find_images, load_image, pil_to_tensor
from .inputs import check_images, check_min_side
from .model import BPCLIP, QualityOutput
from .protocol import TestTimeProtocol
from .zero_shot import DEFAULT_ZERO_SHOT_MODEL, ZeroShotCLIPIQA


@dataclass
class ScoredInput:
    """The result for one input: a score and explanation, or the reason it failed."""

    path: str
    reference: str | None = None
    score: float | None = None
    mos: float | None = None
    top_adjectives: list[tuple[str, float]] = field(default_factory=list)
    dimensions: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; anything else is passed to ``torch.device``.

    Raises:
        DeviceError: an unknown device name, or a device this machine does not have.
    """
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        picked = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if picked.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but no CUDA GPU is available; use auto or cpu")
        if picked.index is not None and picked.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    elif picked.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} asked for, but MPS is not available on this machine; use auto or cpu")
    elif picked.type == "meta":
        raise DeviceError("the meta device holds no data and cannot score images")
    return picked


def prefers_channels_last(device: torch.device) -> bool:
    """Whether the engine runs in channels_last layout on this device by default: on CPU and
    CUDA, where it is faster for a ResNet (1.3-1.4x for a ResNet50 on CPU, benchmarks/RESULTS.md)."""
    return device.type in ("cuda", "cpu")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for a device and precision choice (None: plain fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def compile_attention(model: nn.Module, backend: str = DEFAULT_ATTENTION) -> nn.Module:
    """Compile a BPCLIP model's MSCA and SA blocks in place (eager leaves them as they are)."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if not isinstance(model, BPCLIP) or backend == "eager":
        return model
    for name in ("information_branch", "weight_branch"):
        block = getattr(model, name)
        if block is None or isinstance(block, torch.jit.ScriptModule) or hasattr(block, "_orig_mod"):
            continue
        if backend == "script":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
                setattr(model, name, torch.jit.script(block))
        else:
            setattr(model, name, torch.compile(block, dynamic=True))
    return model


def describe_model(model: nn.Module) -> str:
    """A one-line, honest description: the model kind and whether it was trained."""
    if isinstance(model, ZeroShotCLIPIQA):
        return f"zero-shot CLIP ({model.text_model}), no trained BPCLIP head"
    provenance = model.card.provenance
    kind = f"BPCLIP-{model.config.mode.upper()} ({model.config.backbone})"
    if provenance.get("bundled"):
        return f"{kind}, {provenance.get('name')}: bundled default model, trained on synthetic distortions"
    trained = "trained" if provenance.get("trained") else "UNTRAINED (scores carry no meaning)"
    return f"{kind}, {trained}"


def load_quality_model(
    checkpoint: str | Path | None = None,
    zero_shot: bool = False,
    mode: str | None = None,
    clip_model: str | None = None,
    allow_download: bool = False,
) -> nn.Module:
    """A BPCLIP checkpoint or, only when asked, the zero-shot CLIP model."""
    if zero_shot:
        if mode == "fr":
            raise BPCLIPError("zero-shot CLIP is no-reference only; FR scoring needs a BPCLIP FR checkpoint")
        return ZeroShotCLIPIQA.from_clip(clip_model or DEFAULT_ZERO_SHOT_MODEL, allow_download=allow_download)
    return load_checkpoint(checkpoint, mode=mode)


def _label(source: Any, index: int) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__} #{index}>"


_ATOMIC_TYPES = (str, Path, bytes, bytearray, memoryview, Mapping)  # one input each, never iterated


def to_image_tensor(
    source: Any, min_short_side: int | None = None, data_range: float = 1.0, max_pixels: int | None = None
) -> torch.Tensor:
    """Any supported single-image source as a (3, H, W) float tensor in [0, 1].

    Args:
        source: a file path, PIL image, numpy array (H, W[, C]) or tensor (3, H, W).
        min_short_side: files may be decoded at a reduced scale that keeps this short side.
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
        image, scale = _tensor_as_float(source)
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


def _check_dtype(kind: str, dtype: Any, is_complex: bool, is_bool: bool) -> None:
    if is_complex:
        raise InputError(f"{kind} of complex dtype {dtype} cannot be scored: pass the real-valued image")
    if is_bool:
        raise InputError(f"{kind} of dtype {dtype} cannot be scored: pass uint8 or float image data")


def _tensor_as_float(source: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """A tensor as float32 on the CPU and its white value (None: the caller's data_range)."""
    if source.is_meta:
        raise InputError("a tensor on the meta device holds no data and cannot be scored")
    _check_dtype("a tensor", source.dtype, source.is_complex(), source.dtype == torch.bool)
    scale = {torch.uint8: 255.0, getattr(torch, "uint16", torch.uint8): 65535.0}.get(source.dtype)
    return source.detach().cpu().float(), scale


def _array_as_float(source: np.ndarray) -> tuple[torch.Tensor, float | None]:
    """An (H, W[, C]) array as a (3, H, W) float32 tensor and its white value."""
    if source.dtype.kind not in "biuf":
        if source.dtype.kind == "c":
            _check_dtype("an array", source.dtype, True, False)
        raise InputError(f"an array of dtype {source.dtype} cannot be scored: pass uint8 or float image data")
    _check_dtype("an array", source.dtype, False, source.dtype.kind == "b")
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


def _expand_with_roots(inputs: Any) -> list[tuple[Any, Path | None]]:
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
    return [source for source, _ in _expand_with_roots(inputs)]


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
    files = [p for p in find_images([folder]) if p.suffix.lower() in IMAGE_SUFFIXES]
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


class _PreparedViews(Dataset):
    """Decodes and cuts the views of input ``i`` (in a DataLoader worker when files are involved)."""

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

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        try:
            source, reference = self.sources[index], self.references[index]
            if is_empty_folder(source):
                raise InputError(f"{source}: is a folder with no image files in it")
            if isinstance(reference, Unpaired):
                raise InputError(reference.reason)
            if self.needs_reference and reference is None:
                raise InputError("no reference image found for this image")
            if not self.needs_reference and reference is not None:
                raise InputError("a no-reference model takes no reference image")
            short = self.protocol.decode_short_side
            image = to_image_tensor(source, short, self.data_range, self.max_pixels)
            if reference is not None:
                reference = to_image_tensor(reference, short, self.data_range, self.max_pixels)
            views, ref_views = self.protocol.pair_views(image, reference)
            return index, views, ref_views, None
        except BPCLIPError as exc:
            return index, None, None, str(exc)
        except Exception as exc:  # anything else that one input raises is that input's error
            return index, None, None, f"{type(exc).__name__}: {exc}"


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model for cores


NON_FINITE_ERROR = "the model gave a non-finite score (NaN or Inf): its weights or this input are broken"


class QualityEngine:
    """Batched scoring with one quality model (BPCLIP NR/FR or zero-shot CLIP).

    Args:
        model: a loaded model (see :func:`load_quality_model`); the engine moves it to the
            device and compiles its attention blocks in place.
        device: ``auto`` (cuda, mps, cpu) or a torch device.
        precision: ``auto`` (bf16 or fp16 autocast on cuda, fp32 elsewhere), ``fp32``, ``bf16``, ``fp16``.
            The similarities, softmax and regressor always run in fp32; the bundled NR model in
            bf16 scores within 0.01 of fp32 (tests/test_engine.py).
        attention: ``script`` (TorchScript, default), ``eager`` or ``compile`` (torch.compile).
        batch_size: views per forward pass.
        num_workers: decoding processes for file inputs (default: cores - 1, at most 4).
        protocol: the test-time protocol (default ``resize`` to the model's image size).
        top_k: dominant adjectives reported per image.
        channels_last: run in channels_last layout (default: on CPU and CUDA, where it is faster).
        fold_batchnorm: at inference, run a copy of the backbone with its frozen BatchNorm folded
            into the convolutions (same function; the copy is refolded when the weights change).
        max_pixels: the largest image file decoded, checked from its header before decoding
            (default ``$BPCLIP_MAX_PIXELS`` or :data:`bpclip_core.images.DEFAULT_MAX_PIXELS`).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        attention: str = DEFAULT_ATTENTION,
        batch_size: int = 8,
        num_workers: int | None = None,
        protocol: TestTimeProtocol | str | None = None,
        top_k: int = 3,
        channels_last: bool | None = None,
        fold_batchnorm: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        if batch_size < 1 or top_k < 1:
            raise ValueError("batch_size and top_k must be at least 1")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
        self.max_pixels = default_max_pixels() if max_pixels is None else int(max_pixels)
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.model = compile_attention(model.eval(), attention).to(self.device)
        self.channels_last = prefers_channels_last(self.device) if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.fold_batchnorm = fold_batchnorm
        self._folded: tuple[tuple, nn.Module] | None = None
        self.batch_size, self.top_k = batch_size, top_k
        self.num_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if num_workers is None else num_workers
        default_size = getattr(model, "config", None)
        size = default_size.image_size if default_size is not None else getattr(model, "image_size", 384)
        if protocol is None or isinstance(protocol, str):
            protocol = TestTimeProtocol(protocol or "resize", size=size)
        self.protocol = protocol

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | None = None,
        zero_shot: bool = False,
        mode: str | None = None,
        clip_model: str | None = None,
        allow_download: bool = False,
        **options: Any,
    ) -> QualityEngine:
        """Load a checkpoint (or the zero-shot model, when asked) and wrap it in an engine."""
        return cls(load_quality_model(checkpoint, zero_shot, mode, clip_model, allow_download), **options)

    @property
    def mode(self) -> str:
        return getattr(self.model, "mode", "nr")

    @property
    def description(self) -> str:
        return describe_model(self.model)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def inference_model(self) -> nn.Module:
        """The model that scores under inference mode: BPCLIP with a BatchNorm-folded backbone
        (refolded whenever the backbone's tensors change, e.g. between training steps)."""
        model = self.model
        if not (self.fold_batchnorm and isinstance(model, BPCLIP)):
            return model
        key = tuple((t._version, t.data_ptr()) for t in (*model.backbone.parameters(), *model.backbone.buffers()))
        if self._folded is None or self._folded[0] != key:
            with torch.inference_mode(False):
                backbone = fold_frozen_batchnorm(model.backbone)
            if self.channels_last:
                backbone = backbone.to(memory_format=torch.channels_last)
            self._folded = (key, model.with_backbone(backbone))
        return self._folded[1]

    def forward_views(
        self, views: torch.Tensor, references: torch.Tensor | None = None, differentiable: bool = False
    ) -> QualityOutput:
        """Run the model on prepared views in chunks of ``batch_size``.

        By default under ``torch.inference_mode`` with float32 outputs on the CPU; with
        ``differentiable=True`` gradients flow and outputs stay on the model's device.
        """
        scores, probabilities = [], []
        grad_mode = contextlib.nullcontext() if differentiable else torch.inference_mode()
        model = self.model if differentiable else self.inference_model()
        with grad_mode:
            for start in range(0, views.shape[0], self.batch_size):
                x = views[start : start + self.batch_size].to(self.device, non_blocking=True)
                ref = None
                if references is not None:
                    ref = references[start : start + self.batch_size].to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                    ref = None if ref is None else ref.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    out = model(x, ref)
                score, probs = out.score.float(), out.level_probabilities.float()
                scores.append(score if differentiable else score.cpu())
                probabilities.append(probs if differentiable else probs.cpu())
        return QualityOutput(torch.cat(scores), torch.cat(probabilities))

    def predict(
        self,
        images: torch.Tensor,
        references: torch.Tensor | None = None,
        data_range: float = 1.0,
        differentiable: bool = False,
    ) -> QualityOutput:
        """Score an in-memory batch (N, 3, H, W) under the test-time protocol; raises on bad input.

        ``differentiable=True`` keeps the autograd graph (for use as a loss).
        """
        if self.mode == "fr" and references is None:
            raise InputError("this is a full-reference model: pass reference images")
        if self.mode == "nr" and references is not None:
            raise InputError("this is a no-reference model: it takes no reference images")
        images = check_images(images, "images", data_range)
        if references is not None:
            references = check_images(references, "references", data_range)
            if references.shape != images.shape:
                raise InputError(
                    f"full-reference pairs must have the same shape: images {tuple(images.shape)} "
                    f"vs references {tuple(references.shape)}"
                )
        views, ref_views, counts = self.protocol.batch_views(images, references)
        return _mean_over_views(self.forward_views(views, ref_views, differentiable), counts)

    def score(
        self,
        inputs: Any,
        references: Any = None,
        progress: bool | Callable[[int], Any] = False,
        data_range: float = 1.0,
    ) -> list[ScoredInput]:
        """Score files, folders, PIL images, arrays or tensors; one :class:`ScoredInput` per image.

        ``data_range`` is the value of white in float arrays and tensors (255.0 for 0..255
        data); uint8 data is always read as 0..255. Never raises for a single bad input: its
        ``error`` says what went wrong.
        """
        results: list[ScoredInput] = []
        bar = None
        try:
            for total, chunk in self.iter_scores(inputs, references, data_range):
                if bar is None:
                    bar = _progress_bar(progress, total)
                results.extend(result for _, result in chunk)
                bar(len(chunk))
        finally:
            if bar is not None:
                bar(0, close=True)
        return results

    def iter_scores(
        self, inputs: Any, references: Any = None, data_range: float = 1.0
    ) -> Iterator[tuple[int, list[tuple[int, ScoredInput]]]]:
        """Score chunk by chunk, in input order: yields ``(total, [(index, result), ...])``.

        For callers that write results as they come (a killed run keeps what was written).
        """
        if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
            raise ValueError(f"data_range must be a positive number, got {data_range!r}")
        expanded = _expand_with_roots(inputs)
        if not expanded:
            raise InputError("no images to score")
        sources = [source for source, _ in expanded]
        refs = pair_references(sources, references, [root for _, root in expanded])
        if self.mode == "fr" and references is None:
            raise InputError("this is a full-reference model: pass reference images")
        if self.mode == "fr" and all(r is None or isinstance(r, Unpaired) for r in refs):
            raise InputError(
                f"no reference in {_label(references, 0)} matches any of the {len(sources)} images "
                f"(references are matched by relative path, then by file name, then by stem)"
            )
        if self.mode == "nr" and references is not None:
            raise InputError("this is a no-reference model: it takes no reference images")
        dataset = _PreparedViews(sources, refs, self.protocol, self.mode == "fr", float(data_range), self.max_pixels)
        uses_files = any(isinstance(s, (str, Path)) for s in sources)
        workers = self.num_workers if uses_files and len(sources) > 1 else 0
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=list,
            worker_init_fn=_single_thread_worker if workers else None,
            prefetch_factor=2 if workers else None,
            pin_memory=self.device.type == "cuda",
        )
        for chunk in loader:
            results = {
                index: ScoredInput(
                    _label(sources[index], index),
                    None if refs[index] is None or isinstance(refs[index], Unpaired) else _label(refs[index], index),
                )
                for index, *_ in chunk
            }
            self._score_chunk(chunk, results)
            yield len(sources), sorted(results.items())

    def _score_chunk(self, chunk: list, results: dict[int, ScoredInput]) -> None:
        by_shape: dict[tuple, list] = defaultdict(list)
        for index, views, ref_views, error in chunk:
            if error is not None:
                results[index].error = error
            else:
                by_shape[tuple(views.shape[1:])].append((index, views, ref_views))
        for items in by_shape.values():
            counts = [v.shape[0] for _, v, _ in items]
            views = torch.cat([v for _, v, _ in items])
            refs = None if items[0][2] is None else torch.cat([r for _, _, r in items])
            try:
                output = _mean_over_views(self.forward_views(views, refs), counts)
            except (BPCLIPError, ValueError, RuntimeError) as exc:  # e.g. NaN in one tensor input
                if len(items) == 1:
                    results[items[0][0]].error = str(exc)
                    continue
                for item in items:  # find the culprit: score the group's inputs one by one
                    self._score_chunk([(item[0], item[1], item[2], None)], results)
                continue
            self._record(output, [i for i, _, _ in items], results)

    def _record(self, output: QualityOutput, indices: list[int], results: dict[int, ScoredInput]) -> None:
        scale = self.model.card.score_scale
        for index, explanation in zip(indices, explain(output, self.model.card.adjectives, self.top_k)):
            result = results[index]
            values = [explanation.score, *(p for _, p in explanation.top_adjectives)]
            values += [v.goodness for v in explanation.dimensions.values()]
            if not all(math.isfinite(v) for v in values):
                result.error = NON_FINITE_ERROR
                continue
            result.score = explanation.score
            result.mos = float(scale.to_mos(explanation.score))
            result.top_adjectives = explanation.top_adjectives
            result.dimensions = {k: v.goodness for k, v in explanation.dimensions.items()}


def _mean_over_views(output: QualityOutput, counts: list[int]) -> QualityOutput:
    """Average the views (crops) of each image: (sum(counts), ...) -> (len(counts), ...)."""
    if all(c == 1 for c in counts):
        return output
    scores = torch.stack([s.mean(0) for s in output.score.split(counts)])
    probs = torch.stack([p.mean(0) for p in output.level_probabilities.split(counts)])
    return QualityOutput(scores, probs)


def _progress_bar(progress: bool | Callable[[int], Any], total: int) -> Callable[..., None]:
    """A callable ``update(n, close=False)``: a tqdm bar, the caller's callback, or nothing."""
    if callable(progress):
        return lambda n, close=False: None if close else progress(n)
    if not progress:
        return lambda n, close=False: None
    import sys

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="scoring", unit="img", file=sys.stderr)
    return lambda n, close=False: bar.close() if close else bar.update(n)
