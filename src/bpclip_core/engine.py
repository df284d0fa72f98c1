"""The inference engine every front end uses: any input, batched, on any device.

Inputs: file paths, folders, PIL images, numpy arrays (H, W[, C]) and tensors in [0, 1]
((3, H, W) or (N, 3, H, W)), for NR and for FR pairs. Files are decoded in DataLoader
workers while the model runs; the device is picked automatically (cuda, mps, cpu); GPUs run
in bf16/fp16 autocast; the attention blocks are compiled (TorchScript by default). For
inference the backbone runs with its frozen BatchNorm folded into the convolutions and, on
CPU and CUDA, in channels_last layout (both measured in benchmarks/RESULTS.md).

One bad input (unreadable, too small, no FR partner, NaN) gives an error for that input
alone; every other input is still scored.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .backbone import fold_frozen_batchnorm
from .checkpoint import load_checkpoint
from .errors import BPCLIPError, InputError
from .explain import explain
from .images import IMAGE_SUFFIXES, find_images, load_image, pil_to_tensor
from .inputs import check_images
from .model import BPCLIP, QualityOutput
from .protocol import TestTimeProtocol
from .zero_shot import DEFAULT_ZERO_SHOT_MODEL, ZeroShotCLIPIQA

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTION_BACKENDS = ("script", "eager", "compile")
# TorchScript is the default, chosen by measurement (benchmarks/bench_attention.py, CPU fp32,
# 384x384, batch 8): run interleaved in one process, scripted and eager attention are equal
# within noise (eager 1.003x NR, 1.012x FR), so the scripted form costs nothing and needs no
# compiler at run time; torch.compile was 1.02-1.09x as fast (bench_inference.py) but
# compiles for tens of seconds per new input shape on CPU, which dominates any run of a few
# thousand images of mixed sizes.
DEFAULT_ATTENTION = "script"


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
    """``auto``: cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


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


def to_image_tensor(source: Any, min_short_side: int | None = None) -> torch.Tensor:
    """Any supported single-image source as a (3, H, W) float tensor in [0, 1]."""
    if isinstance(source, (str, Path)):
        return load_image(source, min_short_side)
    if isinstance(source, torch.Tensor):
        image = source.detach().cpu()
    elif isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = array[..., None].repeat(3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise InputError(f"numpy images must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
        if array.shape[2] == 1:
            array = array.repeat(3, axis=2)
        array = array[..., :3]
        scale = 255.0 if array.dtype == np.uint8 else 65535.0 if array.dtype == np.uint16 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / scale).permute(2, 0, 1)
    elif hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
        image = pil_to_tensor(source)
    else:
        raise InputError(
            f"cannot score an object of type {type(source).__name__}: pass a path, PIL image, array or tensor"
        )
    return check_images(image, "image")[0]


def expand_inputs(inputs: Any) -> list[Any]:
    """A flat list of single-image sources: folders are expanded, batches are split."""
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, Iterable) or hasattr(inputs, "convert"):
        inputs = [inputs]
    elif isinstance(inputs, (torch.Tensor, np.ndarray)):
        inputs = list(inputs) if inputs.ndim == 4 else [inputs]
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            out.extend(find_images([item]))
        elif isinstance(item, torch.Tensor) and item.ndim == 4:
            out.extend(item)
        else:
            out.append(item)
    return out


def pair_references(sources: Sequence[Any], references: Any) -> list[Any]:
    """One reference per input: a folder (matched by file name, then stem), a single image, or a list."""
    if references is None:
        return [None] * len(sources)
    if isinstance(references, (str, Path)) and Path(references).is_dir():
        files = [p for p in Path(references).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        by_name = {p.name: p for p in files}
        by_stem = {p.stem: p for p in files}
        names = [Path(s) if isinstance(s, (str, Path)) else None for s in sources]
        return [None if n is None else by_name.get(n.name) or by_stem.get(n.stem) for n in names]
    expanded = expand_inputs(references)
    if len(expanded) == 1:
        return expanded * len(sources)
    if len(expanded) != len(sources):
        raise InputError(f"got {len(sources)} images but {len(expanded)} references; pass one per image or one for all")
    return expanded


class _PreparedViews(Dataset):
    """Decodes and cuts the views of input ``i`` (in a DataLoader worker when files are involved)."""

    def __init__(self, sources: list[Any], references: list[Any], protocol: TestTimeProtocol, needs_reference: bool):
        self.sources, self.references = sources, references
        self.protocol, self.needs_reference = protocol, needs_reference

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        try:
            if self.needs_reference and self.references[index] is None:
                raise InputError("no reference image found for this image")
            if not self.needs_reference and self.references[index] is not None:
                raise InputError("a no-reference model takes no reference image")
            short = self.protocol.decode_short_side
            image = to_image_tensor(self.sources[index], short)
            reference = None
            if self.references[index] is not None:
                reference = to_image_tensor(self.references[index], short)
            views, ref_views = self.protocol.pair_views(image, reference)
            return index, views, ref_views, None
        except (BPCLIPError, OSError, ValueError, RuntimeError) as exc:
            return index, None, None, str(exc)


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model for cores


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
    ) -> None:
        if batch_size < 1 or top_k < 1:
            raise ValueError("batch_size and top_k must be at least 1")
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
    ) -> list[ScoredInput]:
        """Score files, folders, PIL images, arrays or tensors; one :class:`ScoredInput` per image.

        Never raises for a single bad input: its ``error`` says what went wrong.
        """
        results: list[ScoredInput] = []
        bar = None
        try:
            for total, chunk in self.iter_scores(inputs, references):
                if bar is None:
                    bar = _progress_bar(progress, total)
                results.extend(result for _, result in chunk)
                bar(len(chunk))
        finally:
            if bar is not None:
                bar(0, close=True)
        return results

    def iter_scores(self, inputs: Any, references: Any = None) -> Iterator[tuple[int, list[tuple[int, ScoredInput]]]]:
        """Score chunk by chunk, in input order: yields ``(total, [(index, result), ...])``.

        For callers that write results as they come (a killed run keeps what was written).
        """
        sources = expand_inputs(inputs)
        if not sources:
            raise InputError("no images to score")
        refs = pair_references(sources, references)
        if self.mode == "fr" and all(r is None for r in refs):
            raise InputError("this is a full-reference model: pass reference images")
        if self.mode == "nr" and references is not None:
            raise InputError("this is a no-reference model: it takes no reference images")
        dataset = _PreparedViews(sources, refs, self.protocol, self.mode == "fr")
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
                    _label(sources[index], index), _label(refs[index], index) if refs[index] is not None else None
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
