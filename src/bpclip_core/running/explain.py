"""Explanations: which adjectives describe an image, overall and per quality dimension.

The adjectives named for an image (:func:`select_adjectives`) follow its dimensions, never
the adjectives' raw ranking: each dimension is described by the side (good or bad
adjectives) its goodness favours, so a dimension is never both "blurry" and "crisp". A
dimension is a clear defect when its goodness is below ``0.5 - CLEAR_MARGIN`` (bad
adjectives hold at least 60% of its mass) and clearly good above ``0.5 + CLEAR_MARGIN``.
Each dimension's dominant word (the favoured side's most probable one) comes first, clear
defects before clearly good dimensions before undecided ones (by their majority side), by
probability within each group; then the favoured sides' other words, in the same order. So
a defect is named only where the model finds that dimension bad, and a clean image's words
are good ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bpclip_core.model.adjectives import DIMENSIONS, Adjective
from bpclip_core.model.bpclip import QualityOutput

CLEAR_MARGIN = 0.1  # goodness within 0.5 +- this is undecided: named after the clear dimensions


@dataclass
class DimensionSummary:
    """One quality dimension of one image.

    Attributes:
        goodness: share of the dimension's probability mass on its good adjectives, in [0, 1].
        dominant: the most probable adjective of the side its goodness favours (a bad one
            below 0.5, else a good one).
        mass: total probability of the dimension's adjectives.
    """

    goodness: float
    dominant: str
    mass: float


@dataclass
class Explanation:
    """Why one image got its score."""

    score: float
    top_adjectives: list[tuple[str, float]]
    dimensions: dict[str, DimensionSummary]
    adjective_probabilities: dict[str, float]
    level_probabilities: list[dict[str, float]]

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "top_adjectives": [{"adjective": w, "probability": p} for w, p in self.top_adjectives],
            "dimensions": {k: vars(v) for k, v in self.dimensions.items()},
            "adjective_probabilities": self.adjective_probabilities,
            "level_probabilities": self.level_probabilities,
        }


def dimension_goodness(probabilities: torch.Tensor, adjectives: tuple[Adjective, ...]) -> dict[str, torch.Tensor]:
    """Per dimension, the good adjectives' share of that dimension's probability mass: (N,) each."""
    polarity = torch.tensor([a.polarity > 0 for a in adjectives], device=probabilities.device)
    out = {}
    for dim in dimension_names(adjectives):
        in_dim = torch.tensor([a.dimension == dim for a in adjectives], device=probabilities.device)
        mass = (probabilities * in_dim).sum(-1)
        out[dim] = (probabilities * (in_dim & polarity)).sum(-1) / mass.clamp_min(1e-12)
    return out


def dimension_names(adjectives: tuple[Adjective, ...]) -> list[str]:
    """The dimensions of an adjective table, in :data:`~bpclip_core.model.adjectives.DIMENSIONS` order
    (others after them, sorted): the keys of :func:`dimension_goodness`."""
    present = {a.dimension for a in adjectives}
    return [d for d in DIMENSIONS if d in present] + sorted(present - set(DIMENSIONS))


def _sides(
    probabilities: torch.Tensor, adjectives: tuple[Adjective, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) each: the goodness of every adjective's dimension; whether the adjective is on the
    side that goodness favours (good adjectives at 0.5 and above, bad ones below); and whether
    it is its dimension's dominant word (the most probable one of the favoured side)."""
    names = dimension_names(adjectives)
    of = torch.tensor([names.index(a.dimension) for a in adjectives])
    goodness = torch.stack(list(dimension_goodness(probabilities, adjectives).values()), dim=-1)[:, of]
    good = torch.tensor([a.polarity > 0 for a in adjectives], device=probabilities.device)
    favoured = (goodness >= 0.5) == good
    on_side = probabilities.masked_fill(~favoured, -1.0)
    dominant = torch.zeros_like(favoured)
    rows = torch.arange(probabilities.shape[0])
    for d in range(len(names)):
        columns = (of == d).nonzero().flatten()
        dominant[rows, columns[on_side[:, columns].argmax(-1)]] = True
    return goodness, favoured, dominant


def select_adjectives(
    probabilities: torch.Tensor, adjectives: tuple[Adjective, ...], top_k: int = 3
) -> list[list[tuple[str, float]]]:
    """The adjectives that describe each image, at most ``top_k``, with their probabilities.

    Args:
        probabilities: (N, K) adjective probabilities (averaged over levels).
        adjectives: the K adjectives of the model.
        top_k: how many to name (fewer when fewer adjectives are on their dimensions' favoured
            sides, about half of them, or their probabilities are NaN).

    Each dimension offers only the adjectives of the side its goodness favours: first its
    dominant word, one per dimension (clear defects, then clearly good dimensions, then
    undecided ones, each by probability), then the favoured sides' other words in that order.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    probabilities = probabilities.detach().float().cpu()
    goodness, favoured, dominant = _sides(probabilities, adjectives)
    group = torch.full_like(goodness, 2.0)  # undecided
    group[goodness > 0.5 + CLEAR_MARGIN] = 1.0
    group[goodness < 0.5 - CLEAR_MARGIN] = 0.0
    group[~dominant] += 3.0  # the dimensions' other words after every dominant one
    # groups two apart and probabilities in [0, 1]: the key ranks by group, then by probability
    key = torch.where(favoured, 2 * group + 1 - probabilities, torch.inf)
    order = key.sort(dim=-1, stable=True).indices.tolist()  # NaN and inf (not nameable) last
    nameable = torch.isfinite(key).sum(-1).clamp(max=top_k).tolist()
    words = [a.word for a in adjectives]
    return [
        [(words[i], float(probabilities[row, i])) for i in ranked[:count]]
        for row, (ranked, count) in enumerate(zip(order, nameable))
    ]


def explain(output: QualityOutput, adjectives: tuple[Adjective, ...], top_k: int = 3) -> list[Explanation]:
    """One :class:`Explanation` per image of a model output (top adjectives by :func:`select_adjectives`)."""
    words = [a.word for a in adjectives]
    levels = output.level_probabilities.detach().float().cpu()
    mean = levels.mean(dim=1)
    top = select_adjectives(mean, adjectives, top_k)
    goodness = dimension_goodness(mean, adjectives)
    dominant = _sides(mean, adjectives)[2]
    explanations = []
    for n in range(mean.shape[0]):
        dims = {}
        for dim, good in goodness.items():
            idx = [i for i, a in enumerate(adjectives) if a.dimension == dim]
            word = next(words[i] for i in idx if dominant[n, i])
            dims[dim] = DimensionSummary(goodness=float(good[n]), dominant=word, mass=float(mean[n, idx].sum()))
        explanations.append(
            Explanation(
                score=float(output.score[n]),
                top_adjectives=top[n],
                dimensions=dims,
                adjective_probabilities=dict(zip(words, mean[n].tolist())),
                level_probabilities=[dict(zip(words, lv.tolist())) for lv in levels[n]],
            )
        )
    return explanations
