"""Gated local pooling (GLP, eq. 1-2) and the tokenisation of each level into G_i.

Each backbone level F_i is gated by a learned spatial mask, average-pooled in windows to the
deepest level's grid (H_5 x W_5) and reduced to D channels, giving tokens G_i of shape
(N, H_5*W_5, D). The mask network phi_i is a bottleneck conv block ending in one channel
(the paper leaves its shape open; ours: 1x1 reduce, 3x3, 1x1 to one channel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GateBottleneck(nn.Module):
    """phi_i: a bottleneck conv block giving a one-channel mask logit."""

    def __init__(self, in_channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(in_channels // reduction, 8)
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class GatedLocalPoolingNR(nn.Module):
    """No-reference GLP: F_mask = sigmoid(phi(F)) * (W_f F)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = GateBottleneck(channels, reduction)
        self.feature_transform = nn.Conv2d(channels, channels, 1)  # W_f
        self.out_channels = channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(features)) * self.feature_transform(features)  # eq. 2


class GatedLocalPoolingFR(nn.Module):
    """Full-reference GLP: F_mask = sigmoid(phi(|F^d - F^r|)) * (F^d ⊕ F^r ⊕ |F^d - F^r|)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = GateBottleneck(channels, reduction)
        self.out_channels = 3 * channels

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        difference = (distorted - reference).abs()
        mask = torch.sigmoid(self.gate(difference))
        return mask * torch.cat([distorted, reference, difference], dim=1)  # eq. 1


class LevelTokenizer(nn.Module):
    """Window average pooling to the deepest grid, then a linear reduction to D channels: G_i."""

    def __init__(self, in_channels: int, token_dim: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, token_dim, 1)

    def forward(self, gated: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        # pooling first is exact (both steps are linear) and much cheaper on the large levels
        pooled = F.adaptive_avg_pool2d(gated, grid)
        return self.reduce(pooled).flatten(2).transpose(1, 2)  # (N, H5*W5, D)


class LearnedPositionalEncoding(nn.Module):
    """One learnable positional encoding shared by all levels, resized to the token grid."""

    def __init__(self, token_dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(1, token_dim, *grid) * 0.02)

    def forward(self, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.embedding
        if tuple(pos.shape[-2:]) != tuple(grid):
            pos = F.interpolate(pos, size=grid, mode="bilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)  # (1, H5*W5, D)
