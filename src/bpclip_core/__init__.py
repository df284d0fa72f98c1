"""bpclip_core: the BPCLIP image-quality model, its weights, checkpoints and scoring.

The model classes (``BPCLIP``, ``ModelCard``, ``QualityOutput``) are imported on first use,
so that importing this package (e.g. for the command's argument parser) does not import torch.
"""

from typing import TYPE_CHECKING, Any

from bpclip_core import _moved
from bpclip_core.errors import (
    BPCLIPError,
    CheckpointError,
    CheckpointNotFoundError,
    InputError,
    ModeMismatchError,
    WeightsNotFoundError,
)
from bpclip_core.model.adjectives import DIMENSIONS, PROMPT_TEMPLATE, QUALITY_ADJECTIVES, Adjective
from bpclip_core.model.config import PRESETS, BPCLIPConfig, ScoreScale, preset

if TYPE_CHECKING:
    from bpclip_core.model.bpclip import BPCLIP, ModelCard, QualityOutput
    from bpclip_core.running.engine import QualityEngine

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
    "QualityEngine",
    "QualityOutput",
    "ScoreScale",
    "WeightsNotFoundError",
    "__version__",
    "preset",
]

_LAZY = {
    "BPCLIP": "model.bpclip",
    "ModelCard": "model.bpclip",
    "QualityOutput": "model.bpclip",
    "QualityEngine": "running.engine",
}

_moved.install()  # the module paths before the regrouping still import (with a DeprecationWarning)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
