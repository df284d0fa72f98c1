"""bpclip_core: the BPCLIP image-quality model, its weights, checkpoints and scoring."""

from .adjectives import DIMENSIONS, PROMPT_TEMPLATE, QUALITY_ADJECTIVES, Adjective
from .config import PRESETS, BPCLIPConfig, ScoreScale, preset
from .errors import (
    BPCLIPError,
    CheckpointError,
    CheckpointNotFoundError,
    InputError,
    ModeMismatchError,
    WeightsNotFoundError,
)
from .model import BPCLIP, ModelCard, QualityOutput

__version__ = "0.1.0"

__all__ = [
    "BPCLIP",
    "DIMENSIONS",
    "PRESETS",
    "PROMPT_TEMPLATE",
    "QUALITY_ADJECTIVES",
    "Adjective",
    "BPCLIPConfig",
    "BPCLIPError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "InputError",
    "ModeMismatchError",
    "ModelCard",
    "QualityOutput",
    "ScoreScale",
    "WeightsNotFoundError",
    "__version__",
    "preset",
]
