"""The inference engine every front end uses: any input, batched, on any device.

Inputs: file paths, folders, PIL images, numpy arrays (H, W[, C]) and tensors in [0, 1]
((3, H, W) or (N, 3, H, W)), for NR and for FR pairs (what they are and how they pair:
loading.py). Files are decoded in DataLoader workers while the model runs: to float views on
the CPU (the ``cpu`` pipeline), or, on CUDA by default, to uint8 with the resize, crops and
JPEG decoding on the device (the ``device`` pipeline, device_pipeline.py). The device is
picked automatically (cuda, mps, cpu); GPUs run in bf16/fp16 autocast; the attention blocks
are compiled (TorchScript by default). For inference the backbone runs with its frozen
BatchNorm folded into the convolutions and, on CPU and CUDA, in channels_last layout (both
measured in benchmarks/RESULTS.md).

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from bpclip_core.choices import ATTENTION_BACKENDS, DEFAULT_ATTENTION, JPEG_DECODERS, PIPELINES, PRECISIONS
from bpclip_core.errors import BPCLIPError, InputError
from bpclip_core.inputs.checks import check_image_shape, check_images, value_problem
from bpclip_core.inputs.decoding import default_max_pixels
from bpclip_core.inputs.device_pipeline import (
    DecodedInputs,
    DeviceViews,
    OnDevice,
    device_decodes_jpeg,
    on_device,
    to_device,
    value_stats,
)
from bpclip_core.inputs.loading import (
    PreparedViews,
    Unpaired,
    expand_with_roots,
    input_label,
    pair_references,
    single_thread_worker,
)
from bpclip_core.inputs.protocol import TestTimeProtocol
from bpclip_core.model.backbone import fold_frozen_batchnorm
from bpclip_core.model.bpclip import BPCLIP, QualityOutput
from bpclip_core.running.devices import pick_device
from bpclip_core.running.explain import explain
from bpclip_core.running.zero_shot import DEFAULT_ZERO_SHOT_MODEL, ZeroShotCLIPIQA
from bpclip_core.weights.checkpoint import load_checkpoint


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
        # native bf16 only (Ampere on): a T4 or V100 "supports" bf16 by slow emulation; fp16 is its fast type
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
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


NON_FINITE_ERROR = "the model gave a non-finite score (NaN or Inf): its weights or this input are broken"
FP16_HINT = (
    " (under fp16 autocast a model's features can overflow float16: use precision='bf16' or 'fp32', or "
    "rescale the checkpoint with bpclip_core.model.feature_scale.fit_half_precision, docs/training.md)"
)


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
            (default ``$BPCLIP_MAX_PIXELS`` or :data:`bpclip_core.inputs.decoding.DEFAULT_MAX_PIXELS`).
        pipeline: ``auto`` (``device`` on CUDA, ``cpu`` elsewhere), ``cpu`` (workers decode
            files to float and cut the views) or ``device`` (workers decode to uint8, which is
            pinned and sent to the device; float conversion, resize and crops run there; the
            checks of in-memory batches run there too, read back once per batch). Both give the
            same scores on the CPU (tests/test_loading.py).
        jpeg_decoder: with the ``device`` pipeline, who decodes JPEG files: ``pil`` (in the
            workers, at the reduced scale the protocol allows, as the ``cpu`` pipeline does),
            ``torchvision`` (``torchvision.io.decode_jpeg`` on the engine's device, batched:
            nvjpeg on CUDA; PIL's reduced decoding of big JPEGs reproduced by a box filter on
            the device, which moves scores a little; a file it refuses goes to PIL) or ``auto``
            (on CUDA with nvjpeg: ``torchvision`` for the JPEGs PIL decodes at full scale, PIL
            for the others, so that scores stay those of the ``cpu`` pipeline; elsewhere ``pil``).
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
        pipeline: str = "auto",
        jpeg_decoder: str = "auto",
    ) -> None:
        if batch_size < 1 or top_k < 1:
            raise ValueError("batch_size and top_k must be at least 1")
        if pipeline not in PIPELINES or jpeg_decoder not in JPEG_DECODERS:
            raise ValueError(
                f"pipeline must be one of {PIPELINES} and jpeg_decoder one of {JPEG_DECODERS}, "
                f"got {pipeline!r} and {jpeg_decoder!r}"
            )
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
        self.max_pixels = default_max_pixels() if max_pixels is None else int(max_pixels)
        self.device = pick_device(device)
        self.pipeline = ("device" if self.device.type == "cuda" else "cpu") if pipeline == "auto" else pipeline
        if jpeg_decoder == "torchvision" and not (self.pipeline == "device" and device_decodes_jpeg(self.device)):
            raise ValueError(f"jpeg_decoder='torchvision' needs the device pipeline and decode_jpeg on {self.device}")
        self.jpeg_decoder = jpeg_decoder
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
        output = self._forward(views, references, differentiable, checked=False)
        return output if differentiable else _on_cpu(output)

    def _forward(
        self,
        views: torch.Tensor,
        references: torch.Tensor | None = None,
        differentiable: bool = False,
        checked: bool = True,
    ) -> QualityOutput:
        """:meth:`forward_views` with the outputs left on the device (read them back once, later).
        ``checked``: the views' values were checked already, so a BPCLIP model skips its own
        checks (on a GPU, three host syncs per batch)."""
        skip = {"check": False} if checked and isinstance(self.model, BPCLIP) else {}
        scores, probabilities = [], []
        grad_mode = contextlib.nullcontext() if differentiable else torch.inference_mode()
        model = self.model if differentiable else self.inference_model()
        with grad_mode:
            for start in range(0, views.shape[0], self.batch_size):
                x = self._to_device(views[start : start + self.batch_size], differentiable)
                ref = None
                if references is not None:
                    ref = self._to_device(references[start : start + self.batch_size], differentiable)
                with self._autocast():
                    out = model(x, ref, **skip)
                scores.append(out.score.float())
                probabilities.append(out.level_probabilities.float())
        return QualityOutput(torch.cat(scores), torch.cat(probabilities))

    def _to_device(self, views: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Views on the device in the model's layout; the device pipeline copies through pinned memory."""
        if self.pipeline == "device" and not differentiable:
            views = to_device(views, self.device)
        else:
            views = views.to(self.device, non_blocking=True)
        return views.contiguous(memory_format=torch.channels_last) if self.channels_last else views

    def predict(
        self,
        images: torch.Tensor,
        references: torch.Tensor | None = None,
        data_range: float = 1.0,
        differentiable: bool = False,
    ) -> QualityOutput:
        """Score an in-memory batch (N, 3, H, W) under the test-time protocol; raises on bad input.

        ``data_range`` is the value of white of float (and non-uint8 integer) tensors; uint8
        tensors are read as 0..255, as :meth:`score` reads them. ``differentiable=True`` keeps
        the autograd graph (for use as a loss).
        """
        if self.mode == "fr" and references is None:
            raise InputError("this is a full-reference model: pass reference images")
        if self.mode == "nr" and references is not None:
            raise InputError("this is a no-reference model: it takes no reference images")
        if self.pipeline == "device" and not differentiable:
            return self._predict_on_device(images, references, data_range)
        images = check_images(images, "images", _white(images, data_range))
        if references is not None:
            references = _same_shape(images, check_images(references, "references", _white(references, data_range)))
        views, ref_views, counts = self.protocol.batch_views(images, references)
        output = self._forward(views, ref_views, differentiable)
        return _mean_over_views(output if differentiable else _on_cpu(output), counts)

    def _predict_on_device(
        self, images: torch.Tensor, references: torch.Tensor | None, data_range: float
    ) -> QualityOutput:
        """:meth:`predict` with each batch sent (pinned) to the device before anything reads its
        values: checks, conversion and views run there; the checks are read back once, at the end."""
        images = check_image_shape(images, "images")
        if references is not None:
            references = _same_shape(images, check_image_shape(references, "references"))
        outputs, stats = [], defaultdict(list)
        whites = {"images": _white(images, data_range), "references": _white(references, data_range)}

        def send(batch: torch.Tensor, name: str) -> torch.Tensor:
            batch = to_device(batch, self.device)
            batch = batch if batch.is_floating_point() else batch.float()
            stats[name].append(value_stats(batch))
            return batch / whites[name] if whites[name] != 1.0 else batch

        for start in range(0, images.shape[0], self.batch_size):
            part = slice(start, start + self.batch_size)
            refs = None if references is None else send(references[part], "references")
            views, ref_views, counts = self.protocol.batch_views(send(images[part], "images"), refs)
            outputs.append(_mean_over_views(self._forward(views, ref_views), counts))
        for name, parts in stats.items():
            finite, low, high = torch.stack(parts).T.tolist()  # the one sync of this call
            problem = value_problem(name, all(f == 1.0 for f in finite), min(low), max(high), whites[name])
            if problem is not None:
                raise InputError(problem)
        scores = torch.cat([o.score for o in outputs])
        return _on_cpu(QualityOutput(scores, torch.cat([o.level_probabilities for o in outputs])))

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
        self, inputs: Any, references: Any = None, data_range: float = 1.0, subset: Sequence[int] | None = None
    ) -> Iterator[tuple[int, list[tuple[int, ScoredInput]]]]:
        """Score chunk by chunk, in input order: yields ``(total, [(index, result), ...])``.

        For callers that write results as they come (a killed run keeps what was written).
        ``subset``: score only these indices of the expanded inputs, in that order (one
        process's share under ``torchrun``, :mod:`bpclip_core.running.sharding`). Every input is
        still expanded, paired and checked as a whole, so a subset gets the same references
        and errors as the full run; indices are those of the full list, ``total`` is
        ``len(subset)``.
        """
        if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
            raise ValueError(f"data_range must be a positive number, got {data_range!r}")
        expanded = expand_with_roots(inputs)
        if not expanded:
            raise InputError("no images to score")
        sources = [source for source, _ in expanded]
        refs = pair_references(sources, references, [root for _, root in expanded])
        if self.mode == "fr" and references is None:
            raise InputError("this is a full-reference model: pass reference images")
        if self.mode == "fr" and all(r is None or isinstance(r, Unpaired) for r in refs):
            raise InputError(
                f"no reference in {input_label(references, 0)} matches any of the {len(sources)} images "
                f"(references are matched by relative path, then by file name, then by stem)"
            )
        if self.mode == "nr" and references is not None:
            raise InputError("this is a no-reference model: it takes no reference images")
        args = (self.protocol, self.mode == "fr", float(data_range), self.max_pixels)
        prepare: Callable[[list], list] = list
        if self.pipeline == "device":  # the workers never hold tensors that are on the device already
            held = [[OnDevice() if on_device(s, self.device) else s for s in group] for group in (sources, refs)]
            dataset = DecodedInputs(*held, *args, device_jpeg=self._device_jpeg())
            prepare = DeviceViews(dataset, sources, refs, self.device)
        else:
            dataset = PreparedViews(sources, refs, *args)
        selected = range(len(sources)) if subset is None else list(subset)
        if any(not 0 <= index < len(sources) for index in selected):
            raise ValueError(f"subset holds indices outside the {len(sources)} inputs")
        uses_files = any(isinstance(s, (str, Path)) for s in sources)
        workers = self.num_workers if uses_files and len(selected) > 1 else 0
        loader = DataLoader(
            dataset if subset is None else Subset(dataset, selected),
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=list,
            worker_init_fn=single_thread_worker if workers else None,
            prefetch_factor=2 if workers else None,
            pin_memory=self.device.type == "cuda",
        )
        in_flight = self._batches_in_flight()
        pending: list[tuple[dict[int, ScoredInput], list]] = []
        for chunk in loader:
            results = {index: self._blank_result(sources, refs, index) for index, *_ in chunk}
            pending.append((results, self._launch(prepare(chunk), results)))
            if len(pending) > in_flight:
                yield len(selected), self._finish(*pending.pop(0))
        for results, launched in pending:
            yield len(selected), self._finish(results, launched)

    def _batches_in_flight(self) -> int:
        """Batches queued on the device before the oldest one's scores are read back: on an
        accelerator the next batch is prepared and queued first (the read waits for the device),
        so the device does not wait for Python; on the CPU there is nothing to overlap."""
        return 0 if self.device.type == "cpu" else 1

    @staticmethod
    def _blank_result(sources: list[Any], refs: list[Any], index: int) -> ScoredInput:
        reference = refs[index]
        paired = reference is not None and not isinstance(reference, Unpaired)
        return ScoredInput(input_label(sources[index], index), input_label(reference, index) if paired else None)

    def _device_jpeg(self) -> str:
        """Which JPEG files the device pipeline hands to torchvision's decoder on the device:
        ``none``, ``full-scale`` or ``all`` (see :class:`~bpclip_core.inputs.device_pipeline.DecodedInputs`)."""
        if self.jpeg_decoder == "auto":
            return "full-scale" if self.device.type == "cuda" and device_decodes_jpeg(self.device) else "none"
        return "all" if self.jpeg_decoder == "torchvision" else "none"

    def _launch(self, chunk: list, results: dict[int, ScoredInput]) -> list[tuple[list[int], QualityOutput]]:
        """Run the model on a chunk's views, one batch per view size; outputs stay on the device.
        A batch that fails is retried input by input, so that the culprit gets the error."""
        launched: list[tuple[list[int], QualityOutput]] = []
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
                output = _mean_over_views(self._forward(views, refs), counts)
            except (BPCLIPError, ValueError, RuntimeError) as exc:  # e.g. NaN in one tensor input
                if len(items) == 1:
                    results[items[0][0]].error = str(exc)
                    continue
                for item in items:  # find the culprit: score the group's inputs one by one
                    launched += self._launch([(item[0], item[1], item[2], None)], results)
                continue
            launched.append(([i for i, _, _ in items], output))
        return launched

    def _finish(
        self, results: dict[int, ScoredInput], launched: list[tuple[list[int], QualityOutput]]
    ) -> list[tuple[int, ScoredInput]]:
        """Read a chunk's outputs back and record them: its results in input order."""
        for indices, output in launched:
            self._record(_on_cpu(output), indices, results)
        return sorted(results.items())

    def _record(self, output: QualityOutput, indices: list[int], results: dict[int, ScoredInput]) -> None:
        scale = self.model.card.score_scale
        for index, explanation in zip(indices, explain(output, self.model.card.adjectives, self.top_k)):
            result = results[index]
            values = [explanation.score, *(p for _, p in explanation.top_adjectives)]
            values += [v.goodness for v in explanation.dimensions.values()]
            if not all(math.isfinite(v) for v in values):
                result.error = NON_FINITE_ERROR + (FP16_HINT if self.dtype == torch.float16 else "")
                continue
            result.score = explanation.score
            result.mos = float(scale.to_mos(explanation.score))
            result.top_adjectives = explanation.top_adjectives
            result.dimensions = {k: v.goodness for k, v in explanation.dimensions.items()}


def _on_cpu(output: QualityOutput) -> QualityOutput:
    return QualityOutput(output.score.cpu(), output.level_probabilities.cpu())


def _same_shape(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``references``, if it has the shape of ``images`` (an FR batch), else an :class:`InputError`."""
    if references.shape != images.shape:
        raise InputError(
            f"full-reference pairs must have the same shape: images {tuple(images.shape)} "
            f"vs references {tuple(references.shape)}"
        )
    return references


def _white(images: torch.Tensor | None, data_range: float) -> float:
    """The value of white of a tensor given to :meth:`QualityEngine.predict`: 255 for uint8
    (the convention of every front end), else ``data_range``."""
    return 255.0 if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 else data_range


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
