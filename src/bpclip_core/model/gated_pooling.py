"""Gated local pooling (GLP, eq. 1-2) and the tokenisation of each level into G_i.

Each backbone level F_i is gated by a learned spatial mask, average-pooled in windows to the
deepest level's grid (H_5 x W_5) and reduced to D channels, giving tokens G_i of shape
(N, H_5*W_5, D). The mask network phi_i is a bottleneck conv block ending in one channel
(the paper leaves its shape open; ours: 1x1 reduce, 3x3, 1x1 to one channel).

Cost: the gated maps are pooled before any channel mixing. This is exact, not an
approximation: the mask is one scalar per pixel and W_f a per-pixel linear map, so
pool(m * (W_f F + b)) = W_f pool(m * F) + b pool(m). For NR, W_f (C x C) and the reduction
to D channels (D x C) are then applied as one D x C map when that is cheaper (always at
inference, where the product is cached): at 384x384 this saves ~0.8 GMAC per image on the
deepest level alone (see benchmarks/bench_inference.py).

On CPU the masked window sums avoid writing full-size temporaries, which there cost more
than the arithmetic (fresh large allocations are page-faulted in): on channels_last maps they
run as matrix products, and FR inference runs the batch in chunks of at most ``CHUNK_BYTES``
per map, so its full-size difference |F^d - F^r| is a small reused allocation.
``benchmarks/bench_pooling.py`` measures both against the plain form. GPUs (caching
allocators, not measured here) keep the plain form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_BYTES = 16 * 2**20  # FR inference: feature-map bytes per chunk of the batch


def masked_window_means(parts: Sequence[torch.Tensor], mask: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
    """Window averages of ``mask * part`` for each part over a ``grid`` of windows.

    The windows are those of ``adaptive_avg_pool2d`` (exact windows when the size divides).
    For large channels_last maps the masked sums run as matrix products that read each part
    once and never write the full-size product ``mask * part`` (5-8x faster for F_1..F_3 at
    384x384, benchmarks/bench_pooling.py); otherwise multiply, then pool.
    """
    height, width = parts[0].shape[-2:]
    channels_last = all(p.dim() == 4 and p.permute(0, 2, 3, 1).is_contiguous() for p in parts)
    on_cpu = parts[0].device.type == "cpu"  # measured there; GPU allocators cache, the plain form stays
    if on_cpu and channels_last and height * width >= 16 * grid[0] * grid[1]:
        return _window_means_by_matmul(parts, mask, grid)
    if height % grid[0] == 0 and width % grid[1] == 0:  # plain pooling is faster than the adaptive kind
        window = (height // grid[0], width // grid[1])
        return [F.avg_pool2d(p * mask, window) for p in parts]
    return [F.adaptive_avg_pool2d(p * mask, grid) for p in parts]


def _window_means_by_matmul(
    parts: Sequence[torch.Tensor], mask: torch.Tensor, grid: tuple[int, int]
) -> list[torch.Tensor]:
    """Masked window means as matrix products on channels_last parts: first the masked sums
    over each row's column windows, then the mean over row windows (a small (grid_h x H) map)."""
    batch, _, height, width = parts[0].shape
    row_windows = window_matrix(height, grid[0], mask)  # (grid_h, H)
    if width % grid[1] == 0:  # equal column windows: one masked dot product per window row
        window = width // grid[1]
        weights = mask.reshape(batch * height * grid[1], 1, window) / window
    else:  # adaptive column windows: (grid_w x W) weights per image row
        weights = mask.reshape(batch * height, 1, width) * window_matrix(width, grid[1], mask)
    pooled = []
    for part in parts:
        channels = part.shape[1]
        rows = part.permute(0, 2, 3, 1).reshape(weights.shape[0], -1, channels)  # a view
        row_sums = torch.bmm(weights, rows).view(batch, height, grid[1] * channels)
        cells = torch.matmul(row_windows, row_sums)  # (N, grid_h, grid_w * C)
        pooled.append(cells.view(batch, grid[0], grid[1], channels).permute(0, 3, 1, 2))
    return pooled


def window_matrix(size: int, cells: int, like: torch.Tensor) -> torch.Tensor:
    """(cells, size) averaging weights of adaptive average pooling's windows along one axis."""
    index = torch.arange(cells, device=like.device)
    start = torch.div(index * size, cells, rounding_mode="floor")
    end = torch.div((index + 1) * size + cells - 1, cells, rounding_mode="floor")
    position = torch.arange(size, device=like.device)
    inside = (position >= start[:, None]) & (position < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def _activation(figures: bool) -> nn.Module:
    return nn.GELU() if figures else nn.ReLU(inplace=True)


class GateBottleneck(nn.Module):
    """phi_i: a bottleneck conv block giving a one-channel mask logit.

    Conv-GELU-Conv-GELU-Conv as Fig. 3 draws it (``figures=True``), or with ReLU (the
    ``gelu-mlp`` activations of the first bundled models).
    """

    def __init__(self, in_channels: int, reduction: int, figures: bool = True) -> None:
        super().__init__()
        hidden = max(in_channels // reduction, 8)
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            _activation(figures),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            _activation(figures),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class GatedLocalPoolingNR(nn.Module):
    """No-reference GLP: F_mask = sigmoid(phi(F)) * (W_f F), window-pooled to ``grid``."""

    def __init__(self, channels: int, reduction: int, figures: bool = True) -> None:
        super().__init__()
        self.gate = GateBottleneck(channels, reduction, figures)
        self.feature_transform = nn.Conv2d(channels, channels, 1)  # W_f
        self.out_channels = channels
        self._composed: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # inference cache

    def gated(self, features: torch.Tensor) -> torch.Tensor:
        """The full-resolution gated map, as eq. 2 writes it (reference form for tests)."""
        return torch.sigmoid(self.gate(features)) * self.feature_transform(features)  # eq. 2

    def forward(self, features: torch.Tensor, grid: tuple[int, int], reduce: nn.Conv2d | None = None) -> torch.Tensor:
        """The pooled eq. 2 map (N, C, *grid); with ``reduce`` (a 1x1 conv to D channels), that
        reduction applied too: (N, D, *grid), computed with W_f and ``reduce`` as one map."""
        mask = torch.sigmoid(self.gate(features))
        (pooled,) = masked_window_means([features], mask, grid)
        pooled_mask = F.adaptive_avg_pool2d(mask, grid)
        # eq. 2 then pooling, with W_f moved after the (linear) pooling: exact, far cheaper.
        # addcmul: one kernel, in the conv output's layout (a separate bias * mask product is
        # NCHW, and adding it to a channels_last map needs a strided, non-vectorised kernel)
        weight, bias = self.feature_transform.weight, self.feature_transform.bias
        if reduce is None:
            return torch.addcmul(F.conv2d(pooled, weight), bias.view(1, -1, 1, 1), pooled_mask)
        positions = pooled.shape[0] * pooled.shape[2] * pooled.shape[3]
        if torch.is_grad_enabled() and positions <= reduce.out_channels:  # mixing twice is cheaper here
            return reduce(torch.addcmul(F.conv2d(pooled, weight), bias.view(1, -1, 1, 1), pooled_mask))
        weight, bias = self._composed_with(reduce)
        return torch.addcmul(F.conv2d(pooled, weight, reduce.bias), bias.view(1, -1, 1, 1), pooled_mask)

    def _composed_with(self, reduce: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
        """(R W_f, R b_f) as a 1x1 conv weight and a bias; cached while no gradient is needed."""
        transform = self.feature_transform
        if torch.is_grad_enabled():
            return self._compose(reduce)
        key = tuple((t._version, t.data_ptr(), t.dtype) for t in (transform.weight, transform.bias, reduce.weight))
        if self._composed is None or self._composed[0] != key:
            self._composed = (key, *self._compose(reduce))
        return self._composed[1], self._composed[2]

    def _compose(self, reduce: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
        # in the weights' own dtype, never autocast's: the cached product must serve a later
        # run at any precision (autocast casts it per call where one is active)
        with torch.autocast(reduce.weight.device.type, enabled=False):
            reduce_matrix = reduce.weight.flatten(1)
            weight = reduce_matrix @ self.feature_transform.weight.flatten(1)
            return weight[:, :, None, None], reduce_matrix @ self.feature_transform.bias


class GatedLocalPoolingFR(nn.Module):
    """Full-reference GLP: sigmoid(phi(|F^d - F^r|)) * (F^d ⊕ F^r ⊕ |F^d - F^r|), window-pooled."""

    def __init__(self, channels: int, reduction: int, figures: bool = True) -> None:
        super().__init__()
        self.gate = GateBottleneck(channels, reduction, figures)
        self.out_channels = 3 * channels

    def gated(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The full-resolution gated map, as eq. 1 writes it (reference form for tests)."""
        difference = (distorted - reference).abs()
        mask = torch.sigmoid(self.gate(difference))
        return mask * torch.cat([distorted, reference, difference], dim=1)  # eq. 1

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The pooled eq. 1 map (N, 3C, *grid). At inference on CPU the batch runs in chunks of at
        most CHUNK_BYTES per feature map: the full-size difference is then a small, reused
        allocation instead of a fresh one per batch (benchmarks/bench_pooling.py)."""
        per_image = distorted[:1].numel() * distorted.element_size()
        images = max(1, CHUNK_BYTES // per_image)
        if torch.is_grad_enabled() or distorted.device.type != "cpu" or images >= distorted.shape[0]:
            return self._pooled(distorted, reference, grid)
        chunks = zip(distorted.split(images), reference.split(images))
        return torch.cat([self._pooled(d, r, grid) for d, r in chunks])

    def _pooled(self, distorted: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        difference = torch.sub(distorted, reference).abs_()  # in place on a fresh tensor: one pass less
        mask = torch.sigmoid(self.gate(difference))
        # eq. 1 then pooling; each part is pooled before the concatenation (same result, less memory)
        return torch.cat(masked_window_means([distorted, reference, difference], mask, grid), dim=1)


class LevelTokenizer(nn.Module):
    """The reduction of a pooled level to D channels, as a token sequence G_i.

    Conv-GELU as Fig. 3 draws it (``figures=True``), else the 1x1 conv alone.
    """

    def __init__(self, in_channels: int, token_dim: int, figures: bool = True) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, token_dim, 1)
        self.activation = nn.GELU() if figures else nn.Identity()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.reduce(pooled))

    def tokens(self, reduced: torch.Tensor) -> torch.Tensor:
        """The tokens of an already reduced map (N, D, h, w) (the NR pooling folds ``reduce`` in)."""
        return as_tokens(self.activation(reduced))


def as_tokens(grid_map: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) -> the token sequence (N, h*w, D)."""
    return grid_map.flatten(2).transpose(1, 2)


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
