"""CLIP text embeddings of the quality adjectives, computed once by open_clip's frozen text tower.

They are stored in every checkpoint, so scoring never needs the text tower or its weights.
"""

from __future__ import annotations

import torch
from torch import nn

from bpclip_core.model.adjectives import PROMPT_TEMPLATE, QUALITY_ADJECTIVES, Adjective, prompts
from bpclip_core.model.config import BPCLIPConfig
from bpclip_core.model.pretrained import build_clip_model, split_clip_name


@torch.no_grad()
def encode_adjectives(
    clip_model: nn.Module,
    text_model: str,
    adjectives: tuple[Adjective, ...] = QUALITY_ADJECTIVES,
    template: str = PROMPT_TEMPLATE,
) -> torch.Tensor:
    """(K, E) unit-norm text embeddings of the adjective prompts from an open_clip model."""
    import open_clip

    tokenizer = open_clip.get_tokenizer(split_clip_name(text_model)[0])
    tokens = tokenizer(prompts(adjectives, template))
    was_training = clip_model.training
    clip_model.eval()
    embeddings = clip_model.encode_text(tokens.to(next(clip_model.parameters()).device))
    clip_model.train(was_training)
    return torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu()


def adjective_embeddings(
    text_model: str,
    adjectives: tuple[Adjective, ...] = QUALITY_ADJECTIVES,
    template: str = PROMPT_TEMPLATE,
    pretrained: bool = True,
    allow_download: bool = False,
) -> torch.Tensor:
    """Build ``text_model`` (``arch/tag``) from the local cache and embed the adjectives."""
    clip_model = build_clip_model(text_model, pretrained=pretrained, allow_download=allow_download)
    return encode_adjectives(clip_model, text_model, adjectives, template)


def initial_anchors(
    config: BPCLIPConfig,
    adjectives: tuple[Adjective, ...] = QUALITY_ADJECTIVES,
    template: str = PROMPT_TEMPLATE,
    pretrained: bool = True,
    allow_download: bool = False,
) -> torch.Tensor:
    """The (K, E) anchors a new model compares with: CLIP text embeddings of the adjectives, or
    random unit vectors when ``config.clip_text`` is False (Table V ablation; no text tower needed)."""
    if not config.clip_text:
        return torch.nn.functional.normalize(torch.randn(len(adjectives), config.clip_dim), dim=-1)
    return adjective_embeddings(config.text_model, adjectives, template, pretrained, allow_download)
