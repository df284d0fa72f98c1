"""The engines the adapters share: loaded once per (model, device, options), reused by every
metric instance, clone and call, so model weights never live in an adapter's state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from bpclip_core.model.config import MODES
from bpclip_core.running.engine import QualityEngine, load_quality_model, pick_device
from bpclip_core.weights.checkpoint import resolve_checkpoint

_CACHE: dict[tuple, QualityEngine] = {}
_LOCK = threading.Lock()
_MAX_ENGINES = 4


def check_mode(mode: str | None) -> None:
    """Raise :class:`ValueError` naming the valid modes unless ``mode`` is one of them or None.

    The adapters call this before anything is resolved: an unknown mode would otherwise surface
    as a missing bundled model (``bpclip-<mode>``).
    """
    if mode is not None and mode not in MODES:
        raise ValueError(
            f"mode must be one of {', '.join(repr(m) for m in MODES)} (no-reference, full-reference) "
            f"or None (the checkpoint's own), got {mode!r}"
        )


def shared_engine(
    checkpoint: str | Path | None = None,
    zero_shot: bool = False,
    mode: str | None = None,
    clip_model: str | None = None,
    device: str | torch.device | None = "auto",
    **options: Any,
) -> QualityEngine:
    """A cached :class:`QualityEngine` for a checkpoint (or zero-shot CLIP, only when asked).

    With no checkpoint argument the loading precedence applies (``BPCLIP_CHECKPOINT``, the
    ``BPCLIP_HOME`` cache, then the bundled default model of the mode).
    """
    path = None if zero_shot else resolve_checkpoint(checkpoint, mode)
    resolved = pick_device(device)
    stamp = (str(path), path.stat().st_mtime_ns) if path is not None else None
    key = (stamp, zero_shot, clip_model, mode, str(resolved), tuple(sorted(options.items())))
    with _LOCK:
        engine = _CACHE.get(key)
        if engine is None:
            # frozen: adapters score (gradients flow to the images, never into the shared weights)
            model = load_quality_model(path, zero_shot, mode, clip_model).requires_grad_(False)
            engine = QualityEngine(model, device=resolved, **options)
            if len(_CACHE) >= _MAX_ENGINES:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = engine
    return engine


def clear_engine_cache() -> None:
    """Forget every cached engine (frees their models)."""
    with _LOCK:
        _CACHE.clear()
