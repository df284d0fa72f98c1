"""The two attention branches over the level tokens (eq. 3-5).

Both are written so ``torch.jit.script`` can compile them: the inference engine scripts
them by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Attn(W_q X, W_k Y, W_v Y) with several heads and an output projection (eq. 3)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        return x.view(n, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query(queries))
        k = self._heads(self.key(context))
        v = self._heads(self.value(context))
        attended = F.scaled_dot_product_attention(q, k, v)  # eq. 3: softmax(QK^T / sqrt(d_k)) V
        n, heads, length, head_dim = attended.shape
        return self.out(attended.transpose(1, 2).reshape(n, length, heads * head_dim))


class MultiscaleCrossAttention(nn.Module):
    """Information branch (MSCA): level i queries the next deeper level i+1, bottom-up.

    ``top_down=True`` is the Table V ablation (our reading; the paper does not define it):
    the deeper level i+1 queries level i, and the output keeps the query's residual, so
    output i describes level i+1 (the weight branch follows: :class:`SelfAttentionWeight`).
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, top_down: bool = False) -> None:
        super().__init__()
        self.top_down = top_down
        self.blocks = nn.ModuleList([MultiHeadAttention(dim, num_heads) for _ in range(num_levels - 1)])

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if self.top_down:
                out.append(block(tokens[i + 1], tokens[i]) + tokens[i + 1])
            else:
                out.append(block(tokens[i], tokens[i + 1]) + tokens[i])  # eq. 4
        return out


class SelfAttentionWeight(nn.Module):
    """Weight branch (SA): self attention within each of the levels 1..n-1 (eq. 5).

    With ``top_down=True`` (the Table V ablation) it weighs levels 2..n instead: the
    information branch's output i then carries level i+1 (its query and residual), and each
    fused pair (eq. 6) must describe one level, as it does bottom-up.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, top_down: bool = False) -> None:
        super().__init__()
        self.top_down = top_down
        self.blocks = nn.ModuleList([MultiHeadAttention(dim, num_heads) for _ in range(num_levels - 1)])

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        shift = 1 if self.top_down else 0
        for i, block in enumerate(self.blocks):
            level = tokens[i + shift]
            out.append(block(level, level) + level)  # eq. 5
        return out
