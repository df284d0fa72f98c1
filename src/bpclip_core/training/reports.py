"""Report folders: JSON metrics, a Markdown summary, a prediction scatter plot, training curves.

Plots use matplotlib's Agg backend (no display needed); matplotlib is imported only here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRIC_NAMES = ("srcc", "plcc", "plcc_raw", "krcc", "rmse")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def scatter_plot(predictions: Sequence[float], mos: Sequence[float], path: Path, title: str) -> Path:
    """Predicted normalised quality against MOS."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
    axes.scatter(mos, predictions, s=10, alpha=0.6)
    axes.set_xlabel("MOS (dataset scale)")
    axes.set_ylabel("predicted quality (normalised)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


# the trainer's logged loss terms (trainer.LOSS_TERMS), unweighted
LOSS_TERM_LABELS = {"quality_loss": "MSE (eq. 10)", "adjective_loss": "explanation", "ranking_loss": "ranking"}


def curves_plot(history: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss and its terms, validation SRCC/PLCC and learning rate per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    loss_axes.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss (weighted sum)")
    for key, label in LOSS_TERM_LABELS.items():
        values = [row.get(key) for row in history]
        if any(v is not None and v != "" for v in values):  # runs logged before the terms were logged have none
            loss_axes.plot(epochs, [float("nan") if v in (None, "") else v for v in values], marker=".", label=label)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.set_yscale("log")
    loss_axes.legend()
    for key in ("val_srcc", "val_plcc"):
        values = [row.get(key) for row in history]
        if any(v is not None and v != "" for v in values):
            metric_axes.plot(epochs, [float("nan") if v in (None, "") else v for v in values], marker="o", label=key)
    lr_axes = metric_axes.twinx()
    lr_axes.plot(epochs, [row["lr"] for row in history], color="grey", linestyle="--", label="lr")
    lr_axes.set_ylabel("learning rate")
    metric_axes.set_xlabel("epoch")
    metric_axes.set_ylabel("validation correlation")
    if metric_axes.get_legend_handles_labels()[0]:  # no validation part: nothing to name
        metric_axes.legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or Inf float replaced by None, so that it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _format_metrics(metrics: dict[str, Any]) -> str:
    return " | ".join(f"{metrics[k]:.4f}" if isinstance(metrics.get(k), float) else "-" for k in METRIC_NAMES)


def write_report(
    folder: str | Path,
    title: str,
    metrics: dict[str, Any],
    predictions: Sequence[float] | None = None,
    mos: Sequence[float] | None = None,
    history: Sequence[dict[str, Any]] | None = None,
    details: dict[str, Any] | None = None,
    per_split: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write ``metrics.json``, ``summary.md`` and (when data is given) ``scatter.png`` and ``curves.png``.

    ``metrics`` is one metric dict, or (with ``per_split``) the mean/std summary.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"title": title, "metrics": metrics, **(details or {})}
    if per_split is not None:
        payload["per_split"] = list(per_split)
    if predictions is not None and mos is not None:
        payload["predictions"] = [float(p) for p in predictions]
        payload["mos"] = [float(m) for m in mos]
    (folder / "metrics.json").write_text(json.dumps(strict_json(payload), indent=1, allow_nan=False))
    lines = [f"# {title}", ""]
    if metrics.get("non_finite"):
        lines += [
            f"**Warning: {metrics['non_finite']} predictions were NaN or Inf** (the model's weights are broken); "
            f"the metrics below describe the {metrics['count']} finite ones.",
            "",
        ]
    for key, value in (details or {}).items():
        if not isinstance(value, (dict, list)):
            lines.append(f"- {key}: {value}")
    lines += ["", "| metric | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---|" * len(METRIC_NAMES)]
    if per_split is not None:
        means = {k: v["mean"] for k, v in metrics.items()}
        stds = {k: v["std"] for k, v in metrics.items()}
        lines.append(f"| mean | {_format_metrics(means)} |")
        lines.append(f"| std | {_format_metrics(stds)} |")
        for index, run in enumerate(per_split):
            lines.append(f"| split {index} | {_format_metrics(run)} |")
    else:
        lines.append(f"| value | {_format_metrics(metrics)} |")
    lines.append("")
    if predictions is not None and mos is not None and len(predictions):
        scatter_plot(predictions, mos, folder / "scatter.png", title)
        lines.append("![predictions against MOS](scatter.png)")
    if history:
        curves_plot(history, folder / "curves.png", title)
        lines.append("![training curves](curves.png)")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    return folder
