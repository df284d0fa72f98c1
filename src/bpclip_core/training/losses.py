"""Training losses: the paper's MSE on normalised MOS (eq. 10), our explanation and ranking losses.

The paper trains through the MOS alone, so nothing ties an adjective to the defect it
names. Where a dataset records each image's distortion type (synthetic data), the
auxiliary loss pulls the level-averaged adjective probabilities towards a target that puts
the weight of the image's damage (1 - normalised quality) on the adjectives describing its
type (:data:`~bpclip_core.data.synthetic.HARMS`) and the rest on the good adjectives:

    t = q * U(good adjectives) + (1 - q) * (0.75 * U(the type's adjectives) + 0.25 * U(bad overall-quality adjectives))
    L_adj = KL(t || mean over levels of s_i)

so the harmed dimension's goodness falls with the damage and every other dimension stays good.

The ranking loss (also beyond the paper) compares versions of one picture in a batch
(``group_size`` > 1): for each pair with target t_i > t_j, the predicted gap s_i - s_j
should be at least the target gap, L_rank = mean relu((t_i - t_j) - (s_i - s_j)). The MSE
alone lets an NR model explain scores by content (a smooth picture "is" blurry); within one
picture only the distortion differs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bpclip_core.data.synthetic import HARMS, PRISTINE
from bpclip_core.model.adjectives import Adjective

TYPE_SHARE = 0.75


def quality_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between predicted quality and MOS normalised to [0, 1]."""
    return F.mse_loss(predicted, target)  # eq. 10


@functools.lru_cache(maxsize=8)
def _target_parts(adjectives: tuple[Adjective, ...]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per adjective table, computed once: U(good), U(bad overall-quality) and U(each type's adjectives)."""
    words = [a.word for a in adjectives]
    good = torch.tensor([a.polarity > 0 for a in adjectives], dtype=torch.float32)
    overall_bad = torch.tensor(
        [a.polarity < 0 and a.dimension == "overall quality" for a in adjectives], dtype=torch.float32
    )
    overall_bad = overall_bad / overall_bad.sum()
    damaged = {PRISTINE: overall_bad}  # a pristine item's (nil) damage goes to overall quality
    for name, (_, type_words) in HARMS.items():
        harmed = torch.tensor([w in type_words for w in words], dtype=torch.float32)
        damaged[name] = TYPE_SHARE * harmed / harmed.sum() + (1 - TYPE_SHARE) * overall_bad
    return good / good.sum(), overall_bad, damaged


def adjective_targets(
    distortions: Sequence[str], quality: torch.Tensor, adjectives: Sequence[Adjective]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target distributions (N, K) over the adjectives and a mask (N,) of the items that have one.

    Items with an unknown distortion type (``""`` or not in ``HARMS``) get mask 0.
    """
    good, _, damaged = _target_parts(tuple(adjectives))
    known = [name in damaged for name in distortions]
    mask = torch.tensor(known, dtype=torch.float32)
    damage = (1.0 - quality.detach().float().cpu().clamp(0, 1))[:, None] * mask[:, None]
    bad = torch.stack([damaged[name] if ok else torch.zeros_like(good) for name, ok in zip(distortions, known)])
    return ((1 - damage) * good + damage * bad) * mask[:, None], mask


def adjective_loss(level_probabilities: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(target || level-averaged probabilities), averaged over the masked items."""
    mean = level_probabilities.float().mean(dim=1).clamp_min(1e-8)
    per_item = (targets * (targets.clamp_min(1e-12).log() - mean.log())).sum(-1)
    return (per_item * mask).sum() / mask.sum().clamp_min(1.0)


def ranking_loss(
    predicted: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, min_gap: float = 0.01
) -> torch.Tensor:
    """Mean over pairs of one group with t_i > t_j + ``min_gap`` of relu((t_i - t_j) - (s_i - s_j)); 0 without pairs."""
    target_gap = target[:, None] - target[None, :]
    pairs = (groups[:, None] == groups[None, :]) & (target_gap > min_gap)
    if not bool(pairs.any()):
        return predicted.sum() * 0.0
    predicted_gap = predicted[:, None] - predicted[None, :]
    return F.relu(target_gap - predicted_gap)[pairs].mean()
