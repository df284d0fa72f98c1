"""Scoring image files with a BPCLIP checkpoint or the zero-shot CLIP mode.

A failure on one input (unreadable file, too small, no reference partner) is recorded for
that input alone; every other input is still scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .errors import BPCLIPError
from .explain import explain
from .images import load_image, resize_short_side
from .model import BPCLIP
from .zero_shot import ZeroShotCLIPIQA


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


def describe_model(model: nn.Module) -> str:
    """A one-line, honest description: the model kind and whether it was trained."""
    if isinstance(model, ZeroShotCLIPIQA):
        return f"zero-shot CLIP ({model.text_model}), no trained BPCLIP head"
    provenance = model.card.provenance
    trained = "trained" if provenance.get("trained") else "UNTRAINED (scores carry no meaning)"
    return f"BPCLIP-{model.config.mode.upper()} ({model.config.backbone}), {trained}"


def load_quality_model(
    checkpoint: str | Path | None = None,
    zero_shot: bool = False,
    mode: str | None = None,
    clip_model: str | None = None,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A trained-or-initialised BPCLIP checkpoint, or, when asked, the zero-shot CLIP model."""
    if zero_shot:
        if mode == "fr":
            raise BPCLIPError("zero-shot CLIP is no-reference only; FR scoring needs a BPCLIP FR checkpoint")
        from .zero_shot import DEFAULT_ZERO_SHOT_MODEL

        return ZeroShotCLIPIQA.from_clip(clip_model or DEFAULT_ZERO_SHOT_MODEL, allow_download=allow_download).to(
            device
        )
    return load_checkpoint(checkpoint, mode=mode, device=device)


def _prepare(path: str, resize: int | None) -> torch.Tensor:
    return resize_short_side(load_image(path), resize)


def score_files(
    model: nn.Module,
    images: Sequence[str | Path],
    references: Sequence[str | Path | None] | None = None,
    top_k: int = 3,
    resize: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> list[ScoredInput]:
    """Score files one by one (NR, or FR with a reference per image); never raises for one input."""
    device = next(model.parameters()).device
    adjectives = model.card.adjectives
    scale = model.card.score_scale
    references = references if references is not None else [None] * len(images)
    results = []
    for path, ref in zip(images, references):
        result = ScoredInput(str(path), None if ref is None else str(ref))
        try:
            if isinstance(model, BPCLIP) and model.mode == "fr" and ref is None:
                raise BPCLIPError("no reference image found for this distorted image")
            image = _prepare(str(path), resize).unsqueeze(0).to(device)
            reference = None if ref is None else _prepare(str(ref), resize).unsqueeze(0).to(device)
            with torch.inference_mode():
                output = model(image, reference)
            explanation = explain(output, adjectives, top_k)[0]
            result.score = explanation.score
            result.mos = float(scale.to_mos(explanation.score))
            result.top_adjectives = explanation.top_adjectives
            result.dimensions = {k: v.goodness for k, v in explanation.dimensions.items()}
        except (BPCLIPError, OSError, ValueError) as exc:
            result.error = str(exc)
        results.append(result)
        if progress is not None:
            progress(1)
    return results
