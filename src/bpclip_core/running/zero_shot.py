"""Zero-shot CLIP quality: no trained BPCLIP head, just CLIP's image tower and the adjectives.

What users get when they have no trained checkpoint. It is always reported as
"zero-shot CLIP", never passed off as a trained BPCLIP model. The score is the probability
mass of the good adjectives: sum_k p_k * (1 + polarity_k) / 2, in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bpclip_core.errors import InputError
from bpclip_core.inputs.checks import check_images
from bpclip_core.model.adjectives import Adjective
from bpclip_core.model.backbone import CLIP_MEAN, CLIP_STD
from bpclip_core.model.bpclip import ModelCard, QualityOutput
from bpclip_core.model.heads import adjective_probabilities
from bpclip_core.model.pretrained import build_clip_model
from bpclip_core.model.text import encode_adjectives

DEFAULT_ZERO_SHOT_MODEL = "RN50/openai"
CLIP_TEMPERATURE = 0.01  # CLIP's logit scale of 100


class ZeroShotCLIPIQA(nn.Module):
    """Quality from CLIP image embeddings and the polarity of the 40 quality adjectives.

    Images are resized (whole, not cropped) to the tower's input size, since CLIP's
    attention pooling expects a fixed grid.
    """

    kind = "zero-shot CLIP"

    def __init__(
        self,
        image_tower: nn.Module,
        text_embeddings: torch.Tensor,
        text_model: str,
        image_size: int,
        card: ModelCard | None = None,
    ) -> None:
        super().__init__()
        self.image_tower = image_tower.eval()
        self.text_model = text_model
        self.image_size = image_size
        self.card = card or ModelCard(provenance={"trained": False, "kind": self.kind, "clip": text_model})
        polarity = torch.tensor([a.polarity for a in self.card.adjectives], dtype=torch.float32)
        self.register_buffer("text_embeddings", text_embeddings.detach().float().clone())
        self.register_buffer("good_weight", (1 + polarity) / 2)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @property
    def adjectives(self) -> tuple[Adjective, ...]:
        return self.card.adjectives

    @classmethod
    def from_clip(
        cls, text_model: str = DEFAULT_ZERO_SHOT_MODEL, pretrained: bool = True, allow_download: bool = False
    ) -> ZeroShotCLIPIQA:
        """Build from an open_clip model (``arch/tag``) found in the local Hugging Face cache.

        The text tower is used once to embed the adjectives, then dropped.
        """
        clip_model = build_clip_model(text_model, pretrained=pretrained, allow_download=allow_download)
        card = ModelCard(provenance={"trained": False, "kind": cls.kind, "clip": text_model})
        text_embeddings = encode_adjectives(clip_model, text_model, card.adjectives, card.prompt_template)
        size = clip_model.visual.image_size
        image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        return cls(clip_model.visual, text_embeddings, text_model, image_size, card)

    def forward(
        self, images: torch.Tensor, reference: torch.Tensor | None = None, data_range: float = 1.0
    ) -> QualityOutput:
        if reference is not None:
            raise InputError("zero-shot CLIP is a no-reference method: it takes no reference images")
        images = check_images(images, "images", data_range)
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        embeddings = self.image_tower((x - self.mean) / self.std)
        probabilities = adjective_probabilities(embeddings.float(), self.text_embeddings, CLIP_TEMPERATURE)
        score = probabilities @ self.good_weight
        return QualityOutput(score, probabilities.unsqueeze(1))
