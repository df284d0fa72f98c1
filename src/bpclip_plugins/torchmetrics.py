"""BPCLIP as a torchmetrics metric: ``BPCLIPScore`` and its functional twin ``bpclip_score``.

    >>> metric = BPCLIPScore(checkpoint="bpclip-nr.safetensors")   # doctest: +SKIP
    >>> metric.update(preds)                     # NR: preds (N, 3, H, W) in [0, data_range]
    >>> metric.compute()                         # mean normalised quality, 1 = best

For FR, load an FR checkpoint and pass the references: ``metric.update(preds, target)``.
The model runs once per ``update``/``forward`` through the shared engine; its weights are
never part of the metric's state (so ``state_dict``, pickling and ``clone`` stay small).

The conventions are those of torchmetrics' own image metrics (e.g. SSIM): ``reduction`` is
``"elementwise_mean"``, ``"sum"`` or ``"none"``/``None``; ``data_range`` is a float (the
value of white) or a ``(min, max)`` tuple (inputs clamped to it); ``compute()`` before any
``update()`` warns and returns NaN (mean), 0 (sum) or an empty tensor; the metric is
differentiable: ``forward`` keeps the autograd graph when ``preds`` requires grad; an NR
metric given a ``target`` (e.g. inside a ``MetricCollection`` with FR metrics) ignores it
with a one-time warning. A uint8 tensor is read as 0..255 (white 255) whatever
``data_range`` says, as everywhere in bpclip; ``data_range`` is the scale of float tensors.

``return_dimensions=True`` gives per-dimension scores as CLIP-IQA's per-prompt dict does:
``{"score": ..., "overall quality": ..., "brightness": ..., ...}``, one entry per quality
dimension (:data:`bpclip_core.model.adjectives.DIMENSIONS`) holding each image's goodness in [0, 1]
(the share of that dimension's probability on its good adjectives), reduced like the score.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from bpclip_core.errors import InputError
from bpclip_core.inputs.checks import check_dtype
from bpclip_core.running.engine import QualityEngine
from bpclip_core.running.explain import dimension_goodness, dimension_names, select_adjectives

from .engines import check_mode, shared_engine

Reduction = Literal["elementwise_mean", "sum", "none", None]
REDUCTIONS: tuple[Reduction, ...] = ("elementwise_mean", "sum", "none", None)
DataRange = float | tuple[float, float]


def _wants_grad(*tensors: Any) -> bool:
    """Gradients flow only where autograd is on and an input asks for them (else the fast inference path)."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _to_unit_range(images: Any, data_range: DataRange, name: str) -> tuple[Any, float]:
    """(images, white) for the engine: a ``(min, max)`` range clamps to it and shifts min to 0, as SSIM does.

    uint8 tensors pass as they are: the engine reads them as 0..255 whatever ``data_range`` says.
    """
    if isinstance(images, Tensor) and images.dtype == torch.uint8:
        return images, 255.0
    if isinstance(data_range, tuple):
        low, high = data_range
        if isinstance(images, Tensor):  # the dtype checked first: clamp would hide a bool, fail on complex
            images = check_dtype(images, name).clamp(low, high) - low
        return images, float(high - low)
    return images, float(data_range)


def _bpclip_score_update(
    engine: QualityEngine, preds: Tensor, target: Tensor | None, data_range: DataRange
) -> tuple[Tensor, Tensor]:
    """Scores (N,) and averaged adjective probabilities (N, K) of one batch; raises on bad input.

    Differentiable with respect to ``preds`` (and ``target``) when they require grad.
    """
    if engine.mode == "fr" and target is None:
        raise InputError("this is a full-reference BPCLIP model: call update(preds, target) with reference images")
    if engine.mode == "nr" and target is not None:
        raise InputError("this is a no-reference BPCLIP model: call update(preds) without a target")
    if target is not None and isinstance(preds, Tensor) and isinstance(target, Tensor) and preds.shape != target.shape:
        raise InputError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape")
    differentiable = _wants_grad(preds, target)
    preds, white = _to_unit_range(preds, data_range, "images")
    if target is not None:
        target, _ = _to_unit_range(target, data_range, "references")
    output = engine.predict(preds, target, data_range=white, differentiable=differentiable)
    return output.score, output.adjective_probabilities


def _reduce(values: Tensor, reduction: Reduction) -> Tensor:
    """Per-image values (N,) reduced: their mean, their sum, or all of them."""
    if reduction == "elementwise_mean":
        return values.mean()
    return values.sum() if reduction == "sum" else values


def _bpclip_score_compute(scores: Tensor, probabilities: Tensor, reduction: Reduction) -> tuple[Tensor, Tensor]:
    """Reduce per-image scores; the adjective probabilities are averaged unless nothing is reduced."""
    return _reduce(scores, reduction), probabilities if reduction in ("none", None) else probabilities.mean(0)


def _goodness(engine: QualityEngine, probabilities: Tensor) -> Tensor:
    """(N, D) each image's goodness per quality dimension, in the order of :func:`_dimension_names`."""
    return torch.stack(list(dimension_goodness(probabilities, engine.model.card.adjectives).values()), dim=-1)


def _dimension_names(engine: QualityEngine) -> list[str]:
    return dimension_names(engine.model.card.adjectives)


def _dominant_adjectives(engine: QualityEngine, probabilities: Tensor, top_k: int) -> list:
    """The words :func:`~bpclip_core.running.explain.select_adjectives` names.

    A list for (K,), a list per row for (N, K).
    """
    if probabilities.numel() == 0 or not bool(torch.isfinite(probabilities).all()):
        return []  # nothing scored yet
    rows = select_adjectives(probabilities.reshape(-1, probabilities.shape[-1]), engine.model.card.adjectives, top_k)
    words = [[word for word, _ in row] for row in rows]
    return words[0] if probabilities.ndim == 1 else words


def _check_options(reduction: Any, data_range: Any, top_k: int, mode: Any = None) -> Reduction:
    """Validate the options; returns the reduction (``"mean"`` is accepted for ``"elementwise_mean"``)."""
    check_mode(mode)
    if reduction == "mean":  # the name this adapter used before following torchmetrics
        reduction = "elementwise_mean"
    if reduction not in REDUCTIONS:
        raise ValueError(f"Argument `reduction` must be one of {REDUCTIONS}, but got {reduction!r}")
    if isinstance(data_range, tuple):
        if len(data_range) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in data_range):
            raise ValueError(f"data_range as a tuple must be two finite numbers (min, max), got {data_range!r}")
        if not data_range[1] > data_range[0]:
            raise ValueError(f"data_range (min, max) must have max > min, got {data_range!r}")
    elif isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not math.isfinite(data_range):
        raise ValueError(f"data_range must be a positive number or a (min, max) tuple, got {data_range!r}")
    elif data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return reduction


def bpclip_score(
    preds: Tensor,
    target: Tensor | None = None,
    checkpoint: str | Path | None = None,
    zero_shot: bool = False,
    data_range: DataRange = 1.0,
    reduction: Reduction = "elementwise_mean",
    return_adjectives: bool = False,
    top_k: int = 3,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    return_dimensions: bool = False,
) -> Tensor | dict[str, Any]:
    """BPCLIP quality of ``preds`` (NR) or of ``preds`` against references ``target`` (FR).

    Args:
        preds: (N, 3, H, W) images in [0, data_range].
        target: (N, 3, H, W) reference images for a full-reference checkpoint, else None.
        checkpoint: a checkpoint path or cache name; None follows the loading precedence, whose
            last step is the bundled default model of the mode (NR, or FR with ``target``).
        zero_shot: score with zero-shot CLIP (NR only).
        data_range: the value of white (1.0 or 255.0), or a ``(min, max)`` tuple: inputs are
            clamped to it and mapped to [0, 1].
        reduction: ``"elementwise_mean"`` (a scalar), ``"sum"`` or ``"none"``/``None`` (one score per image).
        return_adjectives: also return the ``top_k`` dominant adjectives.
        device, precision: the engine's options.
        return_dimensions: also return each quality dimension's goodness in [0, 1], one
            entry per dimension (named as in :data:`~bpclip_core.model.adjectives.DIMENSIONS`),
            reduced like the score, as CLIP-IQA's per-prompt dict.

    Gradients flow to ``preds`` (and ``target``) when they require grad (also into the
    dimensions' goodness).

    Returns:
        The score tensor; with ``return_adjectives`` or ``return_dimensions`` a dict:
        ``{"score": ..., "adjectives": [...], "<dimension>": ..., ...}`` (what was asked for).
    """
    reduction = _check_options(reduction, data_range, top_k)
    mode = "fr" if target is not None and not zero_shot else None
    engine = shared_engine(checkpoint, zero_shot, mode, device=device, precision=precision)
    scores, probabilities = _bpclip_score_update(engine, preds, target, data_range)
    score, probs = _bpclip_score_compute(scores, probabilities, reduction)
    if not (return_adjectives or return_dimensions):
        return score
    result: dict[str, Any] = {"score": score}
    if return_adjectives:
        result["adjectives"] = _dominant_adjectives(engine, probs, top_k)
    if return_dimensions:
        goodness = _goodness(engine, probabilities)
        result.update({dim: _reduce(goodness[:, d], reduction) for d, dim in enumerate(_dimension_names(engine))})
    return result


class BPCLIPScore(Metric):
    """BPCLIP perceptual quality (higher is better), NR or FR depending on the checkpoint.

    Args:
        checkpoint: a checkpoint path or cache name; None follows the loading precedence
            (``BPCLIP_CHECKPOINT``, then ``$BPCLIP_HOME/checkpoints``, then the bundled default
            model of ``mode``, NR unless asked).
        zero_shot: use zero-shot CLIP (NR only); ``model_description`` always says which.
        mode: ``"nr"`` or ``"fr"`` to insist on a checkpoint of that mode.
        data_range: the value of white (e.g. 1.0 or 255.0), or a ``(min, max)`` tuple: inputs
            are clamped to it and mapped to [0, 1], as in torchmetrics' SSIM.
        reduction: ``"elementwise_mean"`` (default), ``"sum"``, or ``"none"``/``None`` (all
            per-image scores, gathered across processes).
        return_adjectives: ``compute()`` returns ``{"score", "adjectives"}`` with the
            ``top_k`` dominant adjectives (of the mean, or of each image for ``"none"``).
        device: the engine's device; None follows the metric (``metric.to(device)``).
        precision, batch_size: the engine's options.
        return_dimensions: ``compute()`` (and ``forward``) return a dict with, beside
            ``"score"``, each quality dimension's goodness in [0, 1] (``"overall quality"``,
            ``"brightness"``, ..., :data:`~bpclip_core.model.adjectives.DIMENSIONS`), reduced
            like the score: as CLIP-IQA's per-prompt dict. The state grows by one number
            per dimension (summed across processes), or by nothing for ``"none"`` (the
            goodness is computed from the gathered per-image probabilities).

    uint8 tensors are read as 0..255 whatever ``data_range`` says (as in the engine);
    ``data_range`` is the scale of float tensors.

    As in torchmetrics' own metrics, ``forward`` (``metric(preds)``) keeps the autograd graph
    when ``preds`` requires grad (``is_differentiable``), so the batch value can be a loss;
    ``update`` runs without gradients. ``compute()`` before any ``update()`` warns and returns
    NaN (mean), 0 (sum) or an empty tensor (none). A no-reference metric given a ``target``
    (as inside a ``MetricCollection`` with full-reference metrics) ignores it, warning once.
    A batch that ``update`` or ``forward`` rejects (it raises: NaN, an empty batch, a wrong
    dtype) leaves the accumulated state exactly as it was, so ``compute()`` stays right.

    Example:
        >>> metric = BPCLIPScore(checkpoint="tiny-nr.safetensors")  # doctest: +SKIP
        >>> metric.update(torch.rand(4, 3, 64, 64))  # doctest: +SKIP
        >>> metric.compute()  # doctest: +SKIP
        tensor(0.4710)
    """

    higher_is_better = True
    is_differentiable = True
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
        data_range: DataRange = 1.0,
        reduction: Reduction = "elementwise_mean",
        return_adjectives: bool = False,
        top_k: int = 3,
        device: str | torch.device | None = None,
        precision: str = "auto",
        batch_size: int = 8,
        return_dimensions: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reduction = _check_options(reduction, data_range, top_k, mode)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.zero_shot, self.mode = zero_shot, mode
        self.data_range = tuple(data_range) if isinstance(data_range, (tuple, list)) else data_range
        self.return_adjectives, self.top_k, self.return_dimensions = return_adjectives, top_k, return_dimensions
        self.engine_device, self.precision, self.batch_size = device, precision, batch_size
        self.warned_ignored_target = False
        engine = self._engine()  # load (and validate) now, not at the first update
        self.model_description = engine.description
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("probability_sum", torch.zeros(len(engine.model.card.adjectives)), dist_reduce_fx="sum")
        self.sums_goodness = return_dimensions and self.reduction not in ("none", None)
        if self.sums_goodness:
            goodness_sum = torch.zeros(len(_dimension_names(engine)), dtype=torch.float64)
            self.add_state("goodness_sum", goodness_sum, dist_reduce_fx="sum")
        if self.reduction in ("none", None):
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

    # torchmetrics' bookkeeping that forward()/update() change as they run, restored with the states
    _BOOKKEEPING = (
        "_update_count",
        "_computed",
        "_forward_cache",
        "_to_sync",
        "_should_unsync",
        "compute_on_cpu",
        "_enable_grad",
        "_is_synced",
        "_cache",
    )

    def _snapshot(self) -> dict[str, Any]:
        """The accumulated states and the bookkeeping, as :meth:`_restore` puts them back."""
        saved = {name: getattr(self, name) for name in self._BOOKKEEPING if hasattr(self, name)}
        for name in self._defaults:
            value = getattr(self, name)
            # reset() clears list states in place and update() adds to ``total`` in place: copies
            saved[name] = value.clone() if isinstance(value, Tensor) else list(value)
        return saved

    def _restore(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)

    def _keeping_state_on_error(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` that, if it raises, first puts the states and bookkeeping back as they were."""

        @functools.wraps(call)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            saved = self._snapshot()
            try:
                return call(*args, **kwargs)
            except BaseException:
                self._restore(saved)
                raise

        return guarded

    def _wrap_update(self, update: Callable) -> Callable:
        # torchmetrics counts the update before running it: a rejected one must not count
        return self._keeping_state_on_error(super()._wrap_update(update))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The batch value, accumulated into the state; a rejected batch leaves the state as it was.

        torchmetrics' ``forward`` resets the state to score the batch alone and merges the
        saved state back afterwards: if the batch is rejected, that merge never happens, so
        the state (and torchmetrics' bookkeeping) is restored here.
        """
        return self._keeping_state_on_error(super().forward)(*args, **kwargs)

    def update(self, preds: Tensor, target: Tensor | None = None) -> None:
        """Score a batch; a rejected batch (bad shape, range, mode) leaves the state untouched."""
        engine = self._engine()
        if target is not None and engine.mode == "nr":
            if not self.warned_ignored_target:
                warnings.warn(
                    "BPCLIPScore: this is a no-reference model; the target passed to it is ignored "
                    "(e.g. inside a MetricCollection with full-reference metrics). Warned once.",
                    UserWarning,
                    stacklevel=2,
                )
                self.warned_ignored_target = True
            target = None
        scores, probabilities = _bpclip_score_update(engine, preds, target, self.data_range)
        scores, probabilities = scores.to(self.device), probabilities.to(self.device)
        self.score_sum = self.score_sum + scores.double().sum()
        self.total += scores.numel()
        self.probability_sum = self.probability_sum + probabilities.sum(0)
        if self.sums_goodness:
            self.goodness_sum = self.goodness_sum + _goodness(engine, probabilities).double().sum(0)
        if self.reduction in ("none", None):
            self.scores.append(scores)
            self.probabilities.append(probabilities)

    def compute(self) -> Tensor | dict[str, Any]:
        """The reduced score (and the dominant adjectives with ``return_adjectives``, the
        dimensions' goodness with ``return_dimensions``)."""
        empty = int(self.total) == 0  # compute() before update(): torchmetrics has warned already
        if self.reduction == "elementwise_mean":
            score = (self.score_sum / self.total).float()  # NaN when empty, as the built-ins give
            probs = self.probability_sum / self.total
        elif self.reduction == "sum":
            score, probs = self.score_sum.float(), self.probability_sum / self.total
        elif empty:
            score, probs = torch.zeros(0, device=self.device), self.probability_sum.new_zeros(0, 0)
        else:
            score, probs = _cat(self.scores), _cat(self.probabilities)
        if not (self.return_adjectives or self.return_dimensions):
            return score
        result: dict[str, Any] = {"score": score}
        if self.return_adjectives:
            result["adjectives"] = [] if empty else _dominant_adjectives(self._engine(), probs, self.top_k)
        if self.return_dimensions:
            result.update(self._dimensions(probs))
        return result

    def _dimensions(self, probabilities: Tensor) -> dict[str, Tensor]:
        """Each dimension's reduced goodness: from its state (mean, sum) or per image (none)."""
        engine = self._engine()
        if self.reduction == "elementwise_mean":
            goodness = (self.goodness_sum / self.total).float()  # NaN when empty, like the score
        elif self.reduction == "sum":
            goodness = self.goodness_sum.float()
        else:  # (N, D): per image, from the gathered probabilities
            goodness = _goodness(engine, probabilities.reshape(-1, len(engine.model.card.adjectives))).T
        return {dim: goodness[d] for d, dim in enumerate(_dimension_names(engine))}

    def plot(self, val: Tensor | Sequence[Any] | dict[str, Any] | None = None, ax: Any = None) -> Any:
        """Plot a computed value or a sequence of them (e.g. one per epoch); None: ``compute()``.

        Values from ``return_adjectives=True`` (dicts) plot their scores.
        """
        if val is None:
            val = self.compute()
        return self._plot(_scores_only(val), ax)


def _scores_only(val: Any) -> Any:
    """The score tensors of values computed with ``return_adjectives=True`` (dicts)."""
    if isinstance(val, dict):
        return val["score"]
    if isinstance(val, (list, tuple)):
        return [v["score"] if isinstance(v, dict) else v for v in val]
    return val


def _cat(values: Tensor | list[Tensor]) -> Tensor:
    """A state gathered with ``cat``: a tensor after a sync, a list before."""
    return values if isinstance(values, Tensor) else torch.cat(values)
