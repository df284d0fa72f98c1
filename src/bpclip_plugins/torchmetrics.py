"""BPCLIP as a torchmetrics metric: ``BPCLIPScore`` and its functional twin ``bpclip_score``.

    >>> metric = BPCLIPScore(checkpoint="bpclip-nr.safetensors")   # doctest: +SKIP
    >>> metric.update(preds)                     # NR: preds (N, 3, H, W) in [0, data_range]
    >>> metric.compute()                         # mean normalised quality, 1 = best

For FR, load an FR checkpoint and pass the references: ``metric.update(preds, target)``.
The model runs once per ``update``/``forward`` through the shared engine; its weights are
never part of the metric's state (so ``state_dict``, pickling and ``clone`` stay small).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from bpclip_core.engine import QualityEngine
from bpclip_core.errors import InputError

from .engines import shared_engine

Reduction = Literal["mean", "none"]


def _bpclip_score_update(
    engine: QualityEngine, preds: Tensor, target: Tensor | None, data_range: float
) -> tuple[Tensor, Tensor]:
    """Scores (N,) and averaged adjective probabilities (N, K) of one batch; raises on bad input."""
    if engine.mode == "fr" and target is None:
        raise InputError("this is a full-reference BPCLIP model: call update(preds, target) with reference images")
    if engine.mode == "nr" and target is not None:
        raise InputError("this is a no-reference BPCLIP model: call update(preds) without a target")
    if target is not None and isinstance(preds, Tensor) and isinstance(target, Tensor) and preds.shape != target.shape:
        raise InputError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape")
    output = engine.predict(preds, target, data_range=data_range)
    return output.score, output.adjective_probabilities


def _bpclip_score_compute(scores: Tensor, probabilities: Tensor, reduction: Reduction) -> tuple[Tensor, Tensor]:
    if reduction == "mean":
        return scores.mean(), probabilities.mean(0)
    return scores, probabilities


def _dominant_adjectives(engine: QualityEngine, probabilities: Tensor, top_k: int) -> list:
    words = [a.word for a in engine.model.card.adjectives]
    top = probabilities.topk(min(top_k, len(words)), dim=-1).indices
    if top.ndim == 1:
        return [words[int(i)] for i in top]
    return [[words[int(i)] for i in row] for row in top]


def _check_options(reduction: str, data_range: float, top_k: int) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")


def bpclip_score(
    preds: Tensor,
    target: Tensor | None = None,
    checkpoint: str | Path | None = None,
    zero_shot: bool = False,
    data_range: float = 1.0,
    reduction: Reduction = "mean",
    return_adjectives: bool = False,
    top_k: int = 3,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
) -> Tensor | dict[str, Any]:
    """BPCLIP quality of ``preds`` (NR) or of ``preds`` against references ``target`` (FR).

    Args:
        preds: (N, 3, H, W) images in [0, data_range].
        target: (N, 3, H, W) reference images for a full-reference checkpoint, else None.
        checkpoint: a checkpoint path or cache name; None follows the loading precedence, whose
            last step is the bundled default model of the mode (NR, or FR with ``target``).
        zero_shot: score with zero-shot CLIP (NR only).
        data_range: the maximum value of the input scale (1.0 or 255.0).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one score per image).
        return_adjectives: also return the ``top_k`` dominant adjectives.
        device, precision: the engine's options.

    Returns:
        The score tensor, or ``{"score": ..., "adjectives": ...}`` with ``return_adjectives``.
    """
    _check_options(reduction, data_range, top_k)
    mode = "fr" if target is not None and not zero_shot else None
    engine = shared_engine(checkpoint, zero_shot, mode, device=device, precision=precision)
    scores, probabilities = _bpclip_score_update(engine, preds, target, data_range)
    score, probs = _bpclip_score_compute(scores, probabilities, reduction)
    if return_adjectives:
        return {"score": score, "adjectives": _dominant_adjectives(engine, probs, top_k)}
    return score


class BPCLIPScore(Metric):
    """BPCLIP perceptual quality (higher is better), NR or FR depending on the checkpoint.

    Args:
        checkpoint: a checkpoint path or cache name; None follows the loading precedence
            (``BPCLIP_CHECKPOINT``, then ``$BPCLIP_HOME/checkpoints``, then the bundled default
            model of ``mode``, NR unless asked).
        zero_shot: use zero-shot CLIP (NR only); ``model_description`` always says which.
        mode: ``"nr"`` or ``"fr"`` to insist on a checkpoint of that mode.
        data_range: the maximum value of the input scale.
        reduction: ``"mean"`` or ``"none"`` (all per-image scores, gathered across processes).
        return_adjectives: ``compute()`` returns ``{"score", "adjectives"}`` with the
            ``top_k`` dominant adjectives (of the mean, or of each image for ``"none"``).
        device: the engine's device; None follows the metric (``metric.to(device)``).
        precision, batch_size: the engine's options.

    Example:
        >>> metric = BPCLIPScore(checkpoint="tiny-nr.safetensors")  # doctest: +SKIP
        >>> metric.update(torch.rand(4, 3, 64, 64))  # doctest: +SKIP
        >>> metric.compute()  # doctest: +SKIP
        tensor(0.4710)
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    plot_legend_name = "BPCLIP"

    score_sum: Tensor
    total: Tensor

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        zero_shot: bool = False,
        mode: str | None = None,
        data_range: float = 1.0,
        reduction: Reduction = "mean",
        return_adjectives: bool = False,
        top_k: int = 3,
        device: str | torch.device | None = None,
        precision: str = "auto",
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_options(reduction, data_range, top_k)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.zero_shot, self.mode = zero_shot, mode
        self.data_range, self.reduction = data_range, reduction
        self.return_adjectives, self.top_k = return_adjectives, top_k
        self.engine_device, self.precision, self.batch_size = device, precision, batch_size
        engine = self._engine()  # load (and validate) now, not at the first update
        self.model_description = engine.description
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("probability_sum", torch.zeros(len(engine.model.card.adjectives)), dist_reduce_fx="sum")
        if reduction == "none":
            self.add_state("scores", [], dist_reduce_fx="cat")
            self.add_state("probabilities", [], dist_reduce_fx="cat")

    def _engine(self) -> QualityEngine:
        device = self.engine_device if self.engine_device is not None else self.device
        return shared_engine(
            self.checkpoint,
            self.zero_shot,
            self.mode,
            device=device,
            precision=self.precision,
            batch_size=self.batch_size,
        )

    def update(self, preds: Tensor, target: Tensor | None = None) -> None:
        """Score a batch; a rejected batch (bad shape, range, mode) leaves the state untouched."""
        scores, probabilities = _bpclip_score_update(self._engine(), preds, target, self.data_range)
        scores, probabilities = scores.to(self.device), probabilities.to(self.device)
        self.score_sum += scores.double().sum()
        self.total += scores.numel()
        self.probability_sum += probabilities.sum(0)
        if self.reduction == "none":
            self.scores.append(scores)
            self.probabilities.append(probabilities)

    def compute(self) -> Tensor | dict[str, Any]:
        if self.total == 0:
            raise RuntimeError("BPCLIPScore.compute() called before any update()")
        if self.reduction == "mean":
            score = (self.score_sum / self.total).float()
            probs = self.probability_sum / self.total
        else:
            score, probs = _cat(self.scores), _cat(self.probabilities)
        if self.return_adjectives:
            return {"score": score, "adjectives": _dominant_adjectives(self._engine(), probs, self.top_k)}
        return score

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any = None) -> Any:
        """Plot a computed value (or a sequence of them, e.g. one per epoch)."""
        if isinstance(val, dict):
            val = val["score"]
        return self._plot(val, ax)


def _cat(values: Tensor | list[Tensor]) -> Tensor:
    """A state gathered with ``cat``: a tensor after a sync, a list before."""
    return values if isinstance(values, Tensor) else torch.cat(values)
