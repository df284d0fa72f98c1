"""From attended tokens to a quality score: fusion (eq. 6), CLIP mapping (eq. 7),
adjective similarities (eq. 8) and the regressor (eq. 9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two linear layers with a GELU between them."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


def branch_mlp(dim: int, hidden_dim: int, figures: bool = True) -> nn.Sequential:
    """An eq. 6 branch MLP: Linear-ReLU-Linear-ReLU as Fig. 2 draws it, else :func:`mlp`."""
    if not figures:
        return mlp(dim, hidden_dim, dim)
    return nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim), nn.ReLU())


class BranchFusion(nn.Module):
    """G'''_i = MLP(G'_i) * MLP(G''_i); the weight MLP ends in a sigmoid, so weights lie in (0, 1).

    With ``figures`` the information MLP is Fig. 2's Linear-ReLU-Linear-ReLU; in the weight
    MLP the sigmoid takes the trailing ReLU's place (our reading: a ReLU before the sigmoid
    would confine the weights to [0.5, 1)).
    """

    def __init__(self, dim: int, hidden_dim: int, use_weight: bool = True, figures: bool = True) -> None:
        super().__init__()
        self.information = branch_mlp(dim, hidden_dim, figures)
        self.weight = nn.Sequential(branch_mlp(dim, hidden_dim, figures)[:3], nn.Sigmoid()) if use_weight else None

    def forward(self, information: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if self.weight is None:  # Table V "info only": no weight branch
            return self.information(information)
        return self.information(information) * self.weight(weight)  # eq. 6


class CLIPSpaceMapping(nn.Module):
    """x_i = MLP(G'''_i), then the mean over tokens: one vector per image in CLIP's space."""

    def __init__(self, dim: int, hidden_dim: int, clip_dim: int) -> None:
        super().__init__()
        self.project = mlp(dim, hidden_dim, clip_dim)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        # eq. 7, then the token mean (our choice, the paper is silent); the mean is taken before
        # the MLP's last linear layer, which is exact (it is linear) and saves that layer per token
        hidden = self.project[1](self.project[0](fused)).mean(dim=1)
        return self.project[2](hidden)


def adjective_probabilities(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """Softmax over the cosine similarities of image and adjective embeddings (eq. 8, Fig. 1).

    Args:
        image_embeddings: (..., E) vectors in CLIP's space.
        text_embeddings: (K, E) adjective embeddings.
    Returns:
        (..., K) probabilities that sum to one over the K adjectives, in float32 (or float64)
        whatever the autocast state: low-precision cosines and softmax cost up to 3e-3 in
        probability.
    """
    dtype = torch.promote_types(torch.promote_types(image_embeddings.dtype, text_embeddings.dtype), torch.float32)
    with torch.autocast(image_embeddings.device.type, enabled=False):  # fp32 even under bf16/fp16 autocast
        image, text = image_embeddings.to(dtype), text_embeddings.to(dtype)
        cosine = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T  # eq. 8
        return torch.softmax(cosine / temperature, dim=-1)


class QualityRegressor(nn.Module):
    """p = sigmoid(MLP(s_1 ⊕ ... ⊕ s_{n-1})): the score from all levels' adjective probabilities.

    The sigmoid is our addition (the paper's eq. 9 is an unbounded MLP): the targets are MOS
    normalised to [0, 1] (eq. 10), so the score lies in [0, 1] by construction, higher better.
    """

    def __init__(self, num_levels: int, num_adjectives: int, hidden_dim: int) -> None:
        super().__init__()
        self.mlp = mlp(num_levels * num_adjectives, hidden_dim, 1)

    def forward(self, level_probabilities: torch.Tensor) -> torch.Tensor:
        """(N, L, K) probabilities -> (N,) scores, computed in the weights' dtype even under autocast."""
        with torch.autocast(level_probabilities.device.type, enabled=False):
            inputs = level_probabilities.flatten(1).to(self.mlp[0].weight.dtype)
            return torch.sigmoid(self.mlp(inputs).squeeze(1))  # eq. 9, bounded
