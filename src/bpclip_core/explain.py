"""Explanations: which adjectives describe an image, overall and per quality dimension."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .adjectives import DIMENSIONS, Adjective
from .model import QualityOutput


@dataclass
class DimensionSummary:
    """One quality dimension of one image.

    Attributes:
        goodness: share of the dimension's probability mass on its good adjectives, in [0, 1].
        dominant: the dimension's most probable adjective.
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
    for dim in _dimensions(adjectives):
        in_dim = torch.tensor([a.dimension == dim for a in adjectives], device=probabilities.device)
        mass = (probabilities * in_dim).sum(-1)
        out[dim] = (probabilities * (in_dim & polarity)).sum(-1) / mass.clamp_min(1e-12)
    return out


def _dimensions(adjectives: tuple[Adjective, ...]) -> list[str]:
    present = {a.dimension for a in adjectives}
    return [d for d in DIMENSIONS if d in present] + sorted(present - set(DIMENSIONS))


def explain(output: QualityOutput, adjectives: tuple[Adjective, ...], top_k: int = 3) -> list[Explanation]:
    """One :class:`Explanation` per image of a model output."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    words = [a.word for a in adjectives]
    levels = output.level_probabilities.detach().float().cpu()
    mean = levels.mean(dim=1)
    goodness = dimension_goodness(mean, adjectives)
    top = mean.topk(min(top_k, len(words)), dim=-1)
    explanations = []
    for n in range(mean.shape[0]):
        dims = {}
        for dim, good in goodness.items():
            idx = [i for i, a in enumerate(adjectives) if a.dimension == dim]
            probs = mean[n, idx]
            dims[dim] = DimensionSummary(
                goodness=float(good[n]), dominant=words[idx[int(probs.argmax())]], mass=float(probs.sum())
            )
        explanations.append(
            Explanation(
                score=float(output.score[n]),
                top_adjectives=[(words[int(i)], float(p)) for p, i in zip(top.values[n], top.indices[n])],
                dimensions=dims,
                adjective_probabilities=dict(zip(words, mean[n].tolist())),
                level_probabilities=[dict(zip(words, lv.tolist())) for lv in levels[n]],
            )
        )
    return explanations
