"""BPCLIP inside pyiqa: ``pyiqa.create_metric('bpclip')`` (NR, also ``'bpclip_nr'``),
``'bpclip_fr'`` and ``'bpclip_zeroshot'``.

``pyiqa.create_metric('bpclip', return_dimensions=True)`` (pyiqa passes its keyword arguments
to the architecture) returns a dict instead of the (N, 1) scores: ``{"score": (N, 1),
"overall quality": (N, 1), "brightness": (N, 1), ...}``, each quality dimension's goodness
in [0, 1] (as torchmetrics' ``BPCLIPScore(return_dimensions=True)``; not with ``as_loss``).

The metric names, the architecture and input preparation (files, lists) are registered with
pyiqa by :mod:`bpclip_plugins.pyiqa_registration` as soon as pyiqa is imported (in any process,
through the ``bpclip-pyiqa.pth`` start-up hook; also by importing :mod:`bpclip_plugins` and
through the ``pyiqa.archs`` entry point that pyiqa's own trainer uses). This module holds the
architecture and the conversion of pyiqa's trainer output into a BPCLIP checkpoint.

pyiqa is an optional extra (``pip install bpclip[pyiqa]``, PolyForm Noncommercial licence);
without it nothing is registered and nothing fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bpclip_core.errors import InputError
from bpclip_core.inputs.checks import check_image_shape
from bpclip_core.inputs.decoding import load_image
from bpclip_core.running.engine import QualityEngine, load_quality_model
from bpclip_core.running.explain import dimension_goodness

from .engines import check_mode

__all__ = ["BPCLIPArch", "convert_pyiqa_checkpoint"]


class BPCLIPArch(nn.Module):
    """A pyiqa architecture: images in [0, 1] in, (N, 1) quality out, differentiable.

    Args:
        checkpoint: a BPCLIP checkpoint path or cache name (None: the loading precedence).
        mode: ``"nr"`` or ``"fr"``: the checkpoint must be of this mode.
        zero_shot: use zero-shot CLIP instead of a checkpoint (NR only).
        clip_model: open_clip ``arch/tag`` for the zero-shot mode.
        protocol: the engine's test-time protocol (``resize``, ``crops``, ``full``).
        return_dimensions: ``forward`` returns ``{"score": (N, 1), "<dimension>": (N, 1), ...}``
            with each quality dimension's goodness in [0, 1], instead of the (N, 1) scores.

    Raises:
        ValueError: ``mode`` is neither ``"nr"`` nor ``"fr"`` (before any checkpoint is looked for).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        mode: str = "nr",
        zero_shot: bool = False,
        clip_model: str | None = None,
        protocol: str = "resize",
        return_dimensions: bool = False,
    ) -> None:
        super().__init__()
        check_mode(mode)
        self.return_dimensions = return_dimensions
        self.model = load_quality_model(checkpoint, zero_shot, None if zero_shot else mode, clip_model)
        # eager attention: pyiqa may train, copy or save this module; scripted blocks would not pickle
        self.engine = QualityEngine(self.model, device="cpu", attention="eager", protocol=protocol)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> BPCLIPArch:
        super()._apply(fn, *args, **kwargs)
        self.engine.device = next(self.model.parameters()).device  # follow .to(device) / .cuda()
        return self

    def load_file_input(self, path: str | Path) -> torch.Tensor:
        """Decode an image file as the engine does (EXIF orientation, 16-bit, the protocol's
        reduced JPEG decoding): a (1, 3, H, W) tensor in [0, 1]. pyiqa's ``InferenceModel`` reads
        path inputs with this (through :meth:`prepare_input`), so files score as in the engine."""
        decode_side = self.engine.protocol.decode_short_side
        return load_image(path, decode_side, self.engine.max_pixels).unsqueeze(0)

    def prepare_input(self, source: Any) -> torch.Tensor | None:
        """What pyiqa's ``InferenceModel`` passes on to this network for ``source``, as a (N, 3, H, W) batch.

        pyiqa calls this before its own checks (through the hook of :mod:`.pyiqa_registration`):
        a tensor is checked for dtype and shape (float64 and half precision as float32; empty,
        meta, complex and bool refused), a path is decoded by :meth:`load_file_input`, and a
        list or tuple of paths and tensors of one size is one batch, each image scored as in
        a call of its own. Other sources (PIL images, bytes) return None: pyiqa reads them.

        Raises:
            InputError: a refused tensor, an empty list, items of another type or of different sizes.
            ImageReadError: a file that cannot be read (the error names it).
        """
        if isinstance(source, torch.Tensor):
            return check_image_shape(source, "images")
        if isinstance(source, (str, os.PathLike)):
            return self.load_file_input(source)
        if isinstance(source, (list, tuple)):
            return self._list_as_batch(source)
        return None

    def _list_as_batch(self, sources: list | tuple) -> torch.Tensor:
        if not sources:
            raise InputError("an empty list of images: pass at least one image path or tensor")
        batches = []
        for index, item in enumerate(sources):
            if not isinstance(item, (torch.Tensor, str, os.PathLike)):
                raise InputError(
                    f"item {index} of the list is a {type(item).__name__}: a list of images must hold "
                    "image paths or (3, H, W) tensors"
                )
            batches.append(self.prepare_input(item))
        sizes = [tuple(batch.shape[-1:-3:-1]) for batch in batches]  # (width, height)
        if len(set(sizes)) > 1:
            odd = next(i for i, size in enumerate(sizes) if size != sizes[0])
            raise InputError(
                "the images of a list are scored as one batch, so they must have the same size: "
                f"{_item_label(sources, 0)} is {sizes[0][0]}x{sizes[0][1]} px, "
                f"{_item_label(sources, odd)} is {sizes[odd][0]}x{sizes[odd][1]} px; "
                "call the metric once per image for images of different sizes"
            )
        return torch.cat([batch.to(batches[0].device) for batch in batches])

    def forward(
        self, distorted: torch.Tensor, reference: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """(N, 1) scores, or with ``return_dimensions`` a dict of them and each dimension's goodness."""
        output = self.engine.predict(distorted, reference, differentiable=torch.is_grad_enabled())
        score = output.score.unsqueeze(1)
        if not self.return_dimensions:
            return score
        goodness = dimension_goodness(output.adjective_probabilities, self.model.card.adjectives)
        return {"score": score, **{dim: value.unsqueeze(1) for dim, value in goodness.items()}}


def _item_label(sources: list | tuple, index: int) -> str:
    item = sources[index]
    return str(item) if isinstance(item, (str, os.PathLike)) else f"item {index}"


def convert_pyiqa_checkpoint(
    net_path: str | Path,
    init: str | Path,
    out: str | Path,
    params_key: str | None = None,
    mos_range: tuple[float, float] | None = None,
    name: str | None = None,
) -> Path:
    """Turn a ``net_*.pth`` written by pyiqa's trainer for ``BPCLIPArch`` into a BPCLIP checkpoint.

    The ``.pth`` file is read with ``torch.load(weights_only=True)`` (plain tensors only,
    nothing is unpickled); it holds the weights but no config, so the config, adjectives and
    prompt template come from ``init``, the BPCLIP checkpoint the training started from
    (``network: checkpoint:`` in the pyiqa options). The written ``.safetensors`` file scores
    everywhere a checkpoint does (the command, the engine, torchmetrics, FiftyOne) and its
    card records the pyiqa origin.

    Args:
        net_path: the trainer's ``experiments/<name>/models/net_<iter>.pth``.
        init: the initial BPCLIP checkpoint of that training (path or cache name).
        out: the checkpoint file to write.
        params_key: the state-dict key in the file (default: ``params_ema`` if present, else
            ``params``, else the file is the state dict itself).
        mos_range: the (min, max) MOS range the training normalised with (``mos_range`` in the
            dataset options), so scores map back to MOS; default: the initial card's scale.
        name: a model name for the card (default: the output file's stem).

    Raises:
        CheckpointError: the file is not a BPCLIPArch state dict or does not fit ``init``.
    """
    import datetime as _dt

    from bpclip_core.errors import CheckpointError
    from bpclip_core.model.config import ScoreScale
    from bpclip_core.weights.checkpoint import load_checkpoint, save_checkpoint

    net_path, out = Path(net_path), Path(out)
    try:
        data = torch.load(net_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{net_path}: no such file (pass the trainer's net_*.pth)") from None
    except Exception as exc:
        raise CheckpointError(
            f"{net_path}: not a PyTorch file that loads with weights_only=True (only tensors are read): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{net_path}: expected a dict of tensors, got {type(data).__name__}")
    key = params_key or next((k for k in ("params_ema", "params") if k in data), None)
    if key is not None and key not in data:
        raise CheckpointError(f"{net_path}: no {key!r} entry (it has {sorted(map(str, data))[:6]})")
    state = data[key] if key is not None else data
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{net_path}: the {key or 'file'} entry is not a state dict of tensors")
    prefix = "model."
    if not any(k.startswith(prefix) for k in state):
        raise CheckpointError(
            f"{net_path}: no 'model.*' tensors: not the state of a pyiqa BPCLIPArch network "
            "(a zero-shot network has no BPCLIP weights to convert)"
        )
    tensors = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model = load_checkpoint(init)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{net_path}: the tensors do not fit the config of {init}: {exc}") from exc
    for tensor_name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{net_path}: tensor {tensor_name!r} holds NaN or Inf values")
    card = model.card
    initial = dict(card.provenance)
    if mos_range is not None:
        card.score_scale = ScoreScale(float(mos_range[0]), float(mos_range[1]), card.score_scale.higher_is_better)
    card.provenance = {
        "trained": True,
        "name": name or out.stem,
        "trainer": "pyiqa (pyiqa.train with BPCLIPArch)",
        "source": net_path.name,
        "source_key": key,
        "initial_checkpoint": Path(str(init)).name,
        "initial_provenance": initial,
        "converted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_checkpoint(model, out)
