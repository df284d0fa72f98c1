"""Evaluation: SRCC, KRCC, PLCC (raw and after a 4-parameter logistic fit), RMSE, over splits.

Correlations compare the model's normalised quality (1 best) with the dataset's MOS
normalised the same way (so DMOS datasets correlate positively). RMSE is in the dataset's
own MOS units, after mapping predictions through the logistic fit (the VQEG practice).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bpclip_core.choices import DEFAULT_PROTOCOL
from bpclip_core.data.records import QualityDataset
from bpclip_core.errors import InputError
from bpclip_core.inputs.protocol import TestTimeProtocol
from bpclip_core.running.engine import NON_FINITE_ERROR, QualityEngine, ScoredInput


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The usual 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -60, 60)
    return (b1 - b2) / (1 + np.exp(z)) + b2


def fit_logistic(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``predictions`` mapped by the 4-parameter logistic fitted to ``targets`` (identity-like if it fails)."""
    from scipy.optimize import curve_fit

    spread = float(np.std(predictions)) or 1.0
    start = [float(np.max(targets)), float(np.min(targets)), float(np.mean(predictions)), spread]
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning on degenerate fits; the fallback handles them
            params, _ = curve_fit(logistic4, predictions, targets, p0=start, maxfev=20000)
        fitted = logistic4(predictions, *params)
        if np.all(np.isfinite(fitted)):
            return fitted
    except (RuntimeError, ValueError, TypeError):
        pass
    slope, intercept = np.polyfit(predictions, targets, 1) if spread else (0.0, float(np.mean(targets)))
    return slope * predictions + intercept


def quality_metrics(
    predictions: Sequence[float], targets: Sequence[float], mos: Sequence[float] | None = None
) -> dict[str, float]:
    """SRCC, KRCC, PLCC (raw), PLCC and RMSE after the logistic fit.

    Non-finite predictions (a broken model) are left out; ``non_finite`` then counts them, and
    with fewer than 3 finite predictions every metric is NaN.

    Args:
        predictions: predicted normalised quality (1 best).
        targets: ground-truth quality normalised the same way (1 best).
        mos: the same ground truth on the dataset's MOS scale, for RMSE (default: targets).
    """
    from scipy import stats

    pred = np.asarray(predictions, dtype=np.float64)
    truth = np.asarray(targets, dtype=np.float64)
    raw_mos = truth if mos is None else np.asarray(mos, dtype=np.float64)
    if pred.shape != truth.shape or pred.ndim != 1 or len(pred) < 3:
        raise ValueError(f"need at least 3 paired predictions and targets, got {pred.shape} and {truth.shape}")
    finite = np.isfinite(pred)
    non_finite = int((~finite).sum())
    if non_finite:  # a broken model: measure what is left, and say how much was left out
        pred, truth, raw_mos = pred[finite], truth[finite], raw_mos[finite]
        if len(pred) < 3:
            empty = dict.fromkeys(("srcc", "krcc", "plcc", "plcc_raw", "rmse"), float("nan"))
            return {**empty, "count": len(pred), "non_finite": non_finite}

    def safe(value: float) -> float:
        return float(value) if math.isfinite(value) else 0.0

    constant = float(np.std(pred)) == 0.0
    srcc = 0.0 if constant else safe(stats.spearmanr(pred, truth).statistic)
    krcc = 0.0 if constant else safe(stats.kendalltau(pred, truth).statistic)
    plcc_raw = 0.0 if constant else safe(stats.pearsonr(pred, truth).statistic)
    direction_fit = fit_logistic(pred, raw_mos)
    plcc = 0.0 if constant or np.std(direction_fit) == 0 else safe(stats.pearsonr(direction_fit, raw_mos).statistic)
    # PLCC after the fit is reported with the sign of the raw correlation with quality
    plcc = abs(plcc) * (1 if plcc_raw >= 0 else -1)
    rmse = float(np.sqrt(np.mean((direction_fit - raw_mos) ** 2)))
    out = {"srcc": srcc, "krcc": krcc, "plcc": plcc, "plcc_raw": plcc_raw, "rmse": rmse, "count": len(pred)}
    return {**out, "non_finite": non_finite} if non_finite else out


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population) std of each metric over runs (e.g. the 10 splits)."""
    keys = [k for k in runs[0] if k != "count"]
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))} for k in keys}


@contextlib.contextmanager
def scoring_engine(
    model: torch.nn.Module,
    protocol: TestTimeProtocol | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    precision: str = "fp32",
) -> Iterator[QualityEngine]:
    """A :class:`~bpclip_core.running.engine.QualityEngine` over a model that lives on (e.g. one in
    training), which leaves that model as it found it.

    The engine scores as it scores users' inputs: the same decoding, test-time ``protocol``
    (default: the engine's, ``resize`` to the model's image size), BatchNorm folded (into a
    copy of the backbone) and autocast ``precision``. What the engine would otherwise do to
    the model it is given is left out or undone: the attention blocks stay eager (not compiled
    in place), the layout is not changed to channels_last, and on exit the model is back in its
    train/eval mode and on its device (``device`` default: the model's).
    """
    if protocol is None:
        protocol = TestTimeProtocol(size=model.config.image_size)
    was_training = model.training
    home = next(model.parameters()).device
    engine = QualityEngine(
        model, home if device is None else device, precision, attention="eager", batch_size=batch_size,
        num_workers=num_workers, protocol=protocol, channels_last=False,
    )  # fmt: skip
    try:
        yield engine
    finally:
        model.train(was_training)
        if engine.device != home:
            model.to(home)


def score_items(
    model: torch.nn.Module,
    dataset: QualityDataset,
    protocol: TestTimeProtocol | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    precision: str = "fp32",
) -> list[ScoredInput]:
    """Every item of ``dataset`` scored by the engine, in item order (``precision``: the engine's).

    Evaluation goes through :class:`~bpclip_core.running.engine.QualityEngine` (:func:`scoring_engine`),
    the path that users' scores take: the same decoding, the same test-time protocol (default:
    the engine's, ``resize`` to the model's image size), the same model call. An FR model gets
    each item's reference; an NR model (also one trained on an FR dataset) gets the distorted
    image alone. The model is left as it was (train/eval mode, device, layout, modules).

    Raises:
        InputError: an item's file could not be read (the message names it). A non-finite
            score is not raised: that item's result carries the error and no score.
    """
    items = dataset.items
    if not items:
        return []
    with_reference = getattr(model, "mode", dataset.mode) == "fr"
    with scoring_engine(model, protocol, batch_size, device, num_workers, precision) as engine:
        references = [item.reference for item in items] if with_reference else None
        results = engine.score([item.image for item in items], references)
    unreadable = [r for r in results if r.error and r.score is None and not r.error.startswith(NON_FINITE_ERROR)]
    if unreadable:
        first = unreadable[0]
        reason = first.error if first.error.startswith(first.path) else f"{first.path}: {first.error}"
        raise InputError(f"{len(unreadable)} of {len(items)} {dataset.name} items could not be scored; first: {reason}")
    return results


def predict(
    model: torch.nn.Module,
    dataset: QualityDataset,
    protocol: TestTimeProtocol | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> np.ndarray:
    """The model's normalised quality for every item of ``dataset`` (item order; NaN where non-finite)."""
    results = score_items(model, dataset, protocol, batch_size, device, num_workers)
    return np.array([np.nan if r.score is None else r.score for r in results], dtype=np.float64)


def dataset_targets(dataset: QualityDataset) -> tuple[np.ndarray, np.ndarray]:
    """(normalised quality, MOS) arrays of a dataset's items."""
    mos = np.array([item.mos for item in dataset.items], dtype=np.float64)
    return np.asarray(dataset.score_scale.normalise(mos), dtype=np.float64), mos


def evaluate_model(
    model: torch.nn.Module,
    dataset: QualityDataset,
    protocol: TestTimeProtocol | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of ``model`` on ``dataset`` and its predictions (normalised quality)."""
    predictions = predict(model, dataset, protocol, batch_size, device, num_workers)
    targets, mos = dataset_targets(dataset)
    return quality_metrics(predictions, targets, mos), predictions


def evaluate_checkpoint(
    checkpoint: str,
    dataset: QualityDataset,
    indices: Sequence[int] | None = None,
    batch_size: int = 8,
    protocol: str = DEFAULT_PROTOCOL,
    size: int | None = None,
    num_crops: int = 5,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a checkpoint on (part of) a dataset, e.g. cross-dataset: trained on KADID, tested on LIVE.

    ``protocol``, ``size`` (default: the model's image size) and ``num_crops`` are the
    engine's test-time protocol, so the figures describe the scores users get.
    Returns the metrics, predictions, MOS and the checkpoint's provenance.
    """
    from bpclip_core.weights.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, mode=None if dataset.mode == "fr" else "nr", device=device)
    part = dataset.subset(list(indices)) if indices is not None else dataset
    test_time = TestTimeProtocol(protocol, size=size or model.config.image_size, num_crops=num_crops)
    metrics, predictions = evaluate_model(model, part, test_time, batch_size, device)
    return {
        "metrics": metrics,
        "predictions": predictions.tolist(),
        "mos": [item.mos for item in part.items],
        "images": [str(item.image) for item in part.items],
        "checkpoint": str(checkpoint),
        "provenance": model.card.provenance,
        "dataset": dataset.name,
        "protocol": test_time.describe(),
    }
