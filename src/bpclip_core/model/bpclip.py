"""BPCLIP: the whole model, assembled from its blocks in the order of the paper.

backbone levels F_1..F_5 -> gated local pooling (eq. 1/2) -> tokens G_i (+ shared
positional encoding) -> MSCA (eq. 4) and SA (eq. 5) on levels 1..4 -> fusion (eq. 6) ->
CLIP space (eq. 7) -> adjective probabilities (eq. 8) -> regressor (eq. 9).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bpclip_core.errors import InputError
from bpclip_core.inputs.checks import check_images, check_pair
from bpclip_core.model.adjectives import PROMPT_TEMPLATE, QUALITY_ADJECTIVES, Adjective
from bpclip_core.model.attention import MultiscaleCrossAttention, SelfAttentionWeight
from bpclip_core.model.backbone import MultiLevelBackbone, build_backbone
from bpclip_core.model.config import TEMPERATURE_RANGE, BPCLIPConfig, ScoreScale
from bpclip_core.model.gated_pooling import (
    GatedLocalPoolingFR,
    GatedLocalPoolingNR,
    LearnedPositionalEncoding,
    LevelTokenizer,
)
from bpclip_core.model.heads import BranchFusion, CLIPSpaceMapping, QualityRegressor, adjective_probabilities

NUM_LEVELS = 5


@dataclass
class QualityOutput:
    """What a quality model returns for a batch of N images.

    Attributes:
        score: (N,) predicted quality, normalised so that 1 is best (a trained BPCLIP model
            regresses MOS normalised to [0, 1]; zero-shot scores lie in [0, 1]).
        level_probabilities: (N, L, K) adjective probabilities of each of the L levels
            (L = 4 for BPCLIP, 1 for zero-shot CLIP) over the K adjectives.
    """

    score: torch.Tensor
    level_probabilities: torch.Tensor

    @property
    def adjective_probabilities(self) -> torch.Tensor:
        """(N, K) adjective probabilities averaged over levels."""
        return self.level_probabilities.mean(dim=1)


@dataclass
class ModelCard:
    """What travels with a model besides its tensors (stored in checkpoint metadata)."""

    adjectives: tuple[Adjective, ...] = QUALITY_ADJECTIVES
    prompt_template: str = PROMPT_TEMPLATE
    score_scale: ScoreScale = field(default_factory=ScoreScale)
    provenance: dict[str, Any] = field(default_factory=dict)


def _float16_autocast(device_type: str) -> bool:
    """Whether autocast runs in float16 (not bfloat16, which has float32's range) on this device."""
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


class BPCLIP(nn.Module):
    """The BPCLIP quality model, no-reference or full-reference (``config.mode``).

    Args:
        config: the model's shape.
        text_embeddings: (K, E) CLIP text embeddings of the K adjectives (a frozen buffer; with
            ``config.clip_text=False``, the initial values of learned anchors: see
            :func:`bpclip_core.model.text.initial_anchors`).
        card: adjectives, prompt template, score scale and provenance.
        backbone: a prebuilt backbone (e.g. with ImageNet weights); randomly initialised if None.

    Example:
        >>> import torch
        >>> from bpclip_core import BPCLIP, preset
        >>> model = BPCLIP(preset("tiny"), torch.randn(40, 32)).eval()
        >>> model(torch.rand(2, 3, 64, 64)).score.shape
        torch.Size([2])
    """

    def __init__(
        self,
        config: BPCLIPConfig,
        text_embeddings: torch.Tensor,
        card: ModelCard | None = None,
        backbone: MultiLevelBackbone | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.card = card or ModelCard()
        num_adjectives = len(self.card.adjectives)
        if text_embeddings.shape != (num_adjectives, config.clip_dim):
            raise ValueError(
                f"text_embeddings must have shape ({num_adjectives}, {config.clip_dim}) "
                f"(adjectives x clip_dim), got {tuple(text_embeddings.shape)}"
            )
        self.backbone = backbone or build_backbone(config.backbone)
        gate = GatedLocalPoolingFR if config.mode == "fr" else GatedLocalPoolingNR
        figures = config.activations == "figures"
        self.gated_pooling = nn.ModuleList(gate(c, config.gate_reduction, figures) for c in self.backbone.channels)
        self.tokenizers = nn.ModuleList(
            LevelTokenizer(g.out_channels, config.token_dim, figures) for g in self.gated_pooling
        )
        self.positional_encoding = LearnedPositionalEncoding(config.token_dim, config.position_grid)
        top_down = config.attention_direction == "top-down"
        self.information_branch = MultiscaleCrossAttention(config.token_dim, config.num_heads, NUM_LEVELS, top_down)
        self.weight_branch = None
        if config.weight_branch:
            self.weight_branch = SelfAttentionWeight(config.token_dim, config.num_heads, NUM_LEVELS, top_down)
        attended_levels = NUM_LEVELS - 1
        self.fusion = nn.ModuleList(
            BranchFusion(config.token_dim, config.fusion_hidden_dim, config.weight_branch, figures)
            for _ in range(attended_levels)
        )
        self.clip_mapping = nn.ModuleList(
            CLIPSpaceMapping(config.token_dim, config.clip_hidden_dim, config.clip_dim) for _ in range(attended_levels)
        )
        self.regressor = QualityRegressor(attended_levels, num_adjectives, config.regressor_hidden_dim)
        if config.learn_temperature:  # CLIP-style: the log of the logit scale 1 / temperature is learned
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.similarity_temperature)))
        anchors = text_embeddings.detach().float().clone()
        if config.clip_text:  # frozen CLIP text embeddings
            self.register_buffer("text_embeddings", anchors)
        else:  # Table V "no CLIP text": the anchors are learned
            self.text_embeddings = nn.Parameter(anchors)

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def temperature(self) -> torch.Tensor | float:
        """The eq. 8 softmax temperature: the configured one, or the learned one within its clamp."""
        if not self.config.learn_temperature:
            return self.config.similarity_temperature
        low, high = TEMPERATURE_RANGE
        scale = self.log_logit_scale.float()
        # clamped in value, not in gradient: a bound the parameter has crossed never freezes it there
        scale = scale + (scale.clamp(math.log(1 / high), math.log(1 / low)) - scale).detach()
        return torch.exp(-scale)

    def with_backbone(self, backbone: MultiLevelBackbone) -> BPCLIP:
        """A twin of this model that runs ``backbone`` and shares every other module and tensor."""
        twin = copy.copy(self)
        twin._modules = {**self._modules, "backbone": backbone}
        return twin

    def tokens(self, distorted: torch.Tensor, reference: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The level tokens G_1..G_5 with the shared positional encoding added."""
        return self._level_tokens(*self._backbone_levels(distorted, reference))

    def _backbone_levels(
        self, distorted: torch.Tensor, reference: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """F_1..F_5 of the distorted images and of the references (None for NR)."""
        if reference is None:
            return self.backbone(distorted), None
        if self.backbone.training and self.backbone.batchnorm_trains:
            # a training BatchNorm must normalise both with the same batch statistics: one pass
            both = self.backbone(torch.cat([distorted, reference]))
            return [level[: len(distorted)] for level in both], [level[len(distorted) :] for level in both]
        # the same backbone (shared weights) on both; two passes beat one of twice the batch
        return self.backbone(distorted), self.backbone(reference)

    def _level_tokens(
        self, levels: list[torch.Tensor], reference_levels: list[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        grid = (levels[-1].shape[-2], levels[-1].shape[-1])
        position = self.positional_encoding(grid)
        if reference_levels is None:  # NR: W_f and the reduction to D run as one map (see gated_pooling.py)
            return [
                tok.tokens(glp(f, grid, tok.reduce)) + position
                for glp, tok, f in zip(self.gated_pooling, self.tokenizers, levels)
            ]
        pooled = [glp(f, r, grid) for glp, f, r in zip(self.gated_pooling, levels, reference_levels)]
        return [tok(p) + position for tok, p in zip(self.tokenizers, pooled)]

    def forward(
        self,
        distorted: torch.Tensor,
        reference: torch.Tensor | None = None,
        data_range: float = 1.0,
        check: bool = True,
    ) -> QualityOutput:
        """Score images in [0, data_range] of shape (N, 3, H, W); FR models also take references.

        ``check=False`` skips the checks of the values (NaN, range) for callers that made them
        already, e.g. the engine: reading them back is a host sync per call on a GPU. The
        images must then be float in [0, 1].
        """
        if self.mode == "fr":
            if reference is None:
                raise InputError("this is a full-reference (FR) BPCLIP model: pass reference images too")
            if check:
                distorted, reference = check_pair(distorted, reference, data_range)
        else:
            if reference is not None:
                raise InputError(
                    "this is a no-reference (NR) BPCLIP model: it takes no reference images; "
                    "load a full-reference checkpoint for FR scoring"
                )
            if check:
                distorted = check_images(distorted, "images", data_range)
        levels, reference_levels = self._backbone_levels(distorted, reference)
        device_type = distorted.device.type
        if not _float16_autocast(device_type):
            return self.from_levels(levels, reference_levels)
        # float16's range (65504) is too small for the heads (the bundled FR model's gate logits
        # reach 1e7): under fp16 autocast only the backbone runs in half precision
        with torch.autocast(device_type, enabled=False):
            levels = [level.float() for level in levels]
            if reference_levels is not None:
                reference_levels = [level.float() for level in reference_levels]
            return self.from_levels(levels, reference_levels)

    def from_levels(
        self, levels: list[torch.Tensor], reference_levels: list[torch.Tensor] | None = None
    ) -> QualityOutput:
        """Everything after the backbone (eq. 1-9), from F_1..F_5 (and the references' for FR):
        how heads train on a frozen backbone's cached levels (:mod:`bpclip_core.training.frozen_backbone`)."""
        return self._heads(self._level_tokens(levels, reference_levels))

    def _heads(self, tokens: list[torch.Tensor]) -> QualityOutput:
        """MSCA and SA branches, fusion, CLIP space, probabilities and regressor (eq. 4-9)."""
        information = self.information_branch(tokens)
        weights = self.weight_branch(tokens) if self.weight_branch is not None else [None] * len(information)
        level_probabilities = torch.stack(
            [
                adjective_probabilities(mapping(fusion(info, weight)), self.text_embeddings, self.temperature)
                for fusion, mapping, info, weight in zip(self.fusion, self.clip_mapping, information, weights)
            ],
            dim=1,
        )
        return QualityOutput(self.regressor(level_probabilities), level_probabilities)
