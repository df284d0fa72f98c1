"""How well a model judges synthetic distortions of held-out references.

Figures (per distortion type and overall), for a dataset made by ``bpclip synthesize`` with
``include_pristine`` (each reference also listed as level 0):

* ``monotonicity``: per (reference, type) series, the Spearman correlation of the score with
  minus the level, the pristine picture as level 0; averaged over series;
* ``auc``: the probability that a pristine picture scores above a level >= 3 picture;
* ``srcc`` / ``plcc``: against the pseudo-MOS labels (distorted items);
* ``adjective_accuracy``: share of level >= 3 images whose lowest dimension goodness (over
  the five named dimensions, "overall quality" aside) is the dimension the type harms;
  ``adjective_balanced_accuracy`` averages that share over the harmed dimensions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from scipy import stats

from bpclip_core.data.records import QualityDataset
from bpclip_core.data.synthetic import HARMS, PRISTINE
from bpclip_core.training.evaluation import score_items

SEVERE_LEVEL = 3


def _level(item) -> int:
    if item.distortion == PRISTINE:
        return 0
    return int(item.image.stem.rsplit("__", 1)[-1])


def score_dataset(
    model: torch.nn.Module,
    dataset: QualityDataset,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores (N,) and per-dimension goodness {dimension: (N,)} of every item (NaN where
    non-finite), under the engine's default test-time protocol, as users' scores are made."""
    results = score_items(model, dataset, batch_size=batch_size, device=device, precision=precision)
    scores = np.array([np.nan if r.score is None else r.score for r in results])
    dimensions = next((list(r.dimensions) for r in results if r.dimensions), [])  # the model's own order
    goodness = {d: np.array([(r.dimensions or {}).get(d, np.nan) for r in results]) for d in dimensions}
    return scores, goodness


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    )


def _figures(rows: list[dict[str, Any]], pristine: dict[str, float]) -> dict[str, float]:
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        series[(row["content"], row["distortion"])].append((row["level"], row["score"]))
    rhos = []
    for (content, _), points in series.items():
        points = [(0, pristine[content]), *points] if content in pristine else points
        levels, scores = zip(*points)
        if len(set(levels)) > 1 and np.ptp(scores) > 0:
            rhos.append(stats.spearmanr(levels, scores)[0] * -1)
        elif len(set(levels)) > 1:
            rhos.append(0.0)
    severe = np.array([row["score"] for row in rows if row["level"] >= SEVERE_LEVEL])
    scores = np.array([row["score"] for row in rows])
    labels = np.array([row["mos"] for row in rows])
    out = {
        "count": len(rows),
        "monotonicity": float(np.mean(rhos)) if rhos else float("nan"),
        "auc": _auc(np.array(list(pristine.values())), severe),
    }
    if len(rows) > 2 and np.ptp(labels) > 0 and np.ptp(scores) > 0:
        out["srcc"] = float(stats.spearmanr(scores, labels)[0])
        out["plcc"] = float(stats.pearsonr(scores, labels)[0])
    return out


def evaluate_synthetic(
    model: torch.nn.Module,
    dataset: QualityDataset,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """The figures of the module docstring: ``overall``, ``per_type`` and the adjective accuracy
    (``precision``: the engine's, e.g. ``fp16`` to check a model under float16 autocast)."""
    return synthetic_figures(dataset, *score_dataset(model, dataset, batch_size, device, precision))


def synthetic_figures(dataset: QualityDataset, scores: np.ndarray, goodness: dict[str, np.ndarray]) -> dict[str, Any]:
    """:func:`evaluate_synthetic`'s figures from scores already made by :func:`score_dataset` (item order),
    e.g. to figure several parts of one scored dataset without scoring it again; a metric that
    explains nothing (e.g. PSNR) passes ``goodness={}`` and gets no adjective figures."""
    named = [d for d in goodness if d != "overall quality"]
    pristine: dict[str, float] = {}
    rows = []
    for index, item in enumerate(dataset.items):
        if item.distortion == PRISTINE:
            pristine[item.content] = float(scores[index])
            continue
        lowest = min(named, key=lambda d: goodness[d][index]) if named else None
        rows.append(
            {
                "content": item.content,
                "distortion": item.distortion,
                "level": _level(item),
                "score": float(scores[index]),
                "mos": item.mos,
                "lowest": lowest,
            }
        )
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_type[row["distortion"]].append(row)
    per_type = {}
    hits: dict[str, list[bool]] = defaultdict(list)
    pristine_mean = float(np.mean(list(pristine.values()))) if pristine else float("nan")
    for name, type_rows in sorted(by_type.items()):
        per_type[name] = _figures(type_rows, pristine)
        levels = sorted({row["level"] for row in type_rows})
        per_type[name]["mean_score_by_level"] = [pristine_mean] + [
            float(np.mean([row["score"] for row in type_rows if row["level"] == level])) for level in levels
        ]
        harmed = HARMS.get(name, ("", ()))[0]
        if harmed in named:
            type_hits = [row["lowest"] == harmed for row in type_rows if row["level"] >= SEVERE_LEVEL]
            per_type[name]["adjective_accuracy"] = float(np.mean(type_hits)) if type_hits else float("nan")
            per_type[name]["harmed_dimension"] = harmed
            hits[harmed].extend(type_hits)
    overall = _figures(rows, pristine)
    overall["unscored"] = int(np.isnan(scores).sum())  # non-finite scores (e.g. float16 overflow): left out
    per_dimension = {dim: float(np.mean(h)) for dim, h in sorted(hits.items()) if h}
    overall["adjective_balanced_accuracy"] = (
        float(np.mean(list(per_dimension.values()))) if per_dimension else float("nan")
    )
    return {"overall": overall, "per_type": per_type, "adjective_accuracy_per_dimension": per_dimension}


def plot_levels(figures: dict[str, Any], title: str, path) -> None:
    """Mean score against level (0 = pristine), one panel per harmed dimension, one line per type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[str]] = defaultdict(list)
    for name in figures["per_type"]:
        groups[HARMS.get(name, ("other", ()))[0]].append(name)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), sharey=True, squeeze=False)
    for ax, (dimension, names) in zip(axes[0], sorted(groups.items())):
        for name in names:
            means = figures["per_type"][name]["mean_score_by_level"]
            ax.plot(range(len(means)), means, marker="o", markersize=3, label=name)
        ax.set_title(dimension)
        ax.set_xlabel("level (0 = pristine)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("mean score")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_markdown(figures: dict[str, Any], title: str) -> str:
    """The figures as a Markdown table (one row per type, then overall)."""
    lines = [
        f"### {title}",
        "",
        "| type | items | monotonicity | AUC pristine vs level>=3 | SRCC | PLCC | adjective accuracy (harmed dim.) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) and np.isfinite(value) else "-"

    for name, f in figures["per_type"].items():
        adjective = (
            f"{cell(f['adjective_accuracy'])} ({f['harmed_dimension']})" if "adjective_accuracy" in f else "- (overall)"
        )
        lines.append(
            f"| {name} | {f['count']} | {cell(f['monotonicity'])} | {cell(f['auc'])} | {cell(f.get('srcc'))} "
            f"| {cell(f.get('plcc'))} | {adjective} |"
        )
    o = figures["overall"]
    lines.append(
        f"| **overall** | {o['count']} | **{cell(o['monotonicity'])}** | **{cell(o['auc'])}** "
        f"| **{cell(o.get('srcc'))}** | **{cell(o.get('plcc'))}** "
        f"| **{cell(o['adjective_balanced_accuracy'])}** (balanced) |"
    )
    per_dim = ", ".join(f"{d} {v:.3f}" for d, v in figures["adjective_accuracy_per_dimension"].items())
    lines += ["", f"Adjective accuracy per harmed dimension: {per_dim}."]
    return "\n".join(lines) + "\n"
