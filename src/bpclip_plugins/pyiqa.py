"""BPCLIP inside pyiqa: ``pyiqa.create_metric('bpclip')`` (NR), ``'bpclip_fr'`` and
``'bpclip_zeroshot'``.

Importing :mod:`bpclip_plugins` registers the architectures in pyiqa's ``ARCH_REGISTRY``
and adds their entries to pyiqa's default configs (mode, direction, score range). If pyiqa
is not imported yet, registration waits until it is, so importing bpclip_plugins never
pays pyiqa's import time. pyiqa's own trainer finds the architectures through the
``pyiqa.archs`` entry point, which calls :func:`register`.

pyiqa is an optional extra (``pip install bpclip[pyiqa]``, PolyForm Noncommercial licence);
without it nothing is registered and nothing fails.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bpclip_core.engine import QualityEngine, load_quality_model

_registered = False


class BPCLIPArch(nn.Module):
    """A pyiqa architecture: images in [0, 1] in, (N, 1) quality out, differentiable.

    Args:
        checkpoint: a BPCLIP checkpoint path or cache name (None: the loading precedence).
        mode: ``"nr"`` or ``"fr"``: the checkpoint must be of this mode.
        zero_shot: use zero-shot CLIP instead of a checkpoint (NR only).
        clip_model: open_clip ``arch/tag`` for the zero-shot mode.
        protocol: the engine's test-time protocol (``resize``, ``crops``, ``full``).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        mode: str = "nr",
        zero_shot: bool = False,
        clip_model: str | None = None,
        protocol: str = "resize",
    ) -> None:
        super().__init__()
        self.model = load_quality_model(checkpoint, zero_shot, None if zero_shot else mode, clip_model)
        # eager attention: pyiqa may train, copy or save this module; scripted blocks would not pickle
        self.engine = QualityEngine(self.model, device="cpu", attention="eager", protocol=protocol)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> BPCLIPArch:
        super()._apply(fn, *args, **kwargs)
        self.engine.device = next(self.model.parameters()).device  # follow .to(device) / .cuda()
        return self

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        output = self.engine.predict(distorted, reference, differentiable=torch.is_grad_enabled())
        return output.score.unsqueeze(1)


def _entries() -> dict[str, dict[str, Any]]:
    return {
        "bpclip": {
            "metric_opts": {"type": "BPCLIPArch", "mode": "nr"},
            "metric_mode": "NR",
            "lower_better": False,
            "score_range": "0, 1",
        },
        "bpclip_fr": {
            "metric_opts": {"type": "BPCLIPArch", "mode": "fr"},
            "metric_mode": "FR",
            "lower_better": False,
            "score_range": "0, 1",
        },
        "bpclip_zeroshot": {
            "metric_opts": {"type": "BPCLIPArch", "zero_shot": True},
            "metric_mode": "NR",
            "lower_better": False,
            "score_range": "0, 1",
        },
    }


def register() -> None:
    """Register BPCLIP's architecture and default configs with pyiqa (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    ARCH_REGISTRY.register(BPCLIPArch, override=True)
    for name, entry in _entries().items():
        DEFAULT_CONFIGS.setdefault(name, entry)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register` right after pyiqa itself is imported for the first time."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "pyiqa":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            register()

        spec.loader.exec_module = exec_module
        return spec


def register_when_available() -> None:
    """Register now if pyiqa is imported, later if it is installed but not imported, else never."""
    if "pyiqa" in sys.modules:
        if sys.modules["pyiqa"] is not None:  # None: imports of pyiqa are blocked
            register()
        return
    try:
        installed = importlib.util.find_spec("pyiqa") is not None
    except (ImportError, ValueError):
        installed = False
    if installed and not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
