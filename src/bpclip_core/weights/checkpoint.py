"""BPCLIP checkpoints: safetensors tensors with JSON metadata in the file's header.

One file holds everything needed to score: the weights, the adjective text embeddings
(so no text tower is needed), the config, the adjectives and prompt template, the score
scale and where the weights came from. Loading never unpickles anything.

Where :func:`load_checkpoint` looks, in this order:
1. the path (or cache name) passed explicitly;
2. the file named by the ``BPCLIP_CHECKPOINT`` environment variable;
3. ``$BPCLIP_HOME/checkpoints/<name>.safetensors`` (``BPCLIP_HOME`` defaults to
   ``~/.cache/bpclip``; the default name is ``bpclip-nr`` or ``bpclip-fr``);
4. the model of that name bundled with the package (``bpclip_core/weights/bundled/``: the default
   NR and FR models, trained by this project on synthetic distortions; see
   docs/default-models.md);
5. otherwise a :class:`CheckpointNotFoundError` that says what to do.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import torch

from bpclip_core.errors import CheckpointError, CheckpointNotFoundError, ModeMismatchError
from bpclip_core.model.adjectives import adjectives_from_dicts
from bpclip_core.model.backbone import BACKBONES, CLIP_BACKBONES, build_backbone
from bpclip_core.model.bpclip import BPCLIP, ModelCard
from bpclip_core.model.config import BPCLIPConfig, Mode, ScoreScale, preset
from bpclip_core.model.text import initial_anchors

FORMAT = "bpclip-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "bpclip"
DIGEST_KEY = "tensor_digest"  # in the metadata: sha256 of the tensors, checked on load
CHECKPOINT_ENV = "BPCLIP_CHECKPOINT"
HOME_ENV = "BPCLIP_HOME"
SUFFIX = ".safetensors"

NO_WEIGHTS_ADVICE = (
    "No official trained BPCLIP weights exist; bpclip bundles its own default models "
    "(bpclip-nr, bpclip-fr) in the package, or train one (bpclip train, or "
    "bash scripts/train_default_models.sh)"
)
# How each fix is spelled: (as a Python argument, as a command flag); see BPCLIPError.naming_the_fix
_FIXES = {
    "checkpoint": ("checkpoint='path/to/model.safetensors'", "--checkpoint path/to/model.safetensors"),
    "zero_shot": ("zero_shot=True", "--zero-shot"),
}


def _no_weights_advice(mode: str | None) -> str:
    """What to do when no checkpoint exists; zero-shot CLIP is offered for NR only (it has no FR mode)."""
    if mode == "fr":
        return f"{NO_WEIGHTS_ADVICE}."
    return f"{NO_WEIGHTS_ADVICE}, or score with the zero-shot CLIP mode ($zero_shot)."


BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

# Sane bounds of a checkpoint's config, checked before any tensor is allocated: a file
# whose header declares absurd layers is refused instead of building them. Generous: the
# paper config uses 256/8/8/512/512/256/1024, 12x12 and 384.
CONFIG_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "token_dim": (1, 8192),
    "num_heads": (1, 128),
    "gate_reduction": (1, 4096),
    "fusion_hidden_dim": (1, 16384),
    "clip_hidden_dim": (1, 16384),
    "regressor_hidden_dim": (1, 16384),
    "clip_dim": (1, 8192),
    "image_size": (32, 8192),
}
POSITION_GRID_BOUNDS = (1, 256)
MAX_ADJECTIVES = 4096
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
INTEGER_DTYPES = frozenset({"I64", "I32"})  # counters (BatchNorm's num_batches_tracked); may be float too


def bpclip_home() -> Path:
    """The bpclip cache folder: ``$BPCLIP_HOME`` or ``~/.cache/bpclip``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "bpclip").expanduser()


def checkpoint_dir() -> Path:
    """Where named checkpoints live: ``$BPCLIP_HOME/checkpoints``."""
    return bpclip_home() / "checkpoints"


def default_checkpoint_name(mode: str | None) -> str:
    return f"bpclip-{mode or 'nr'}"


def bundled_checkpoint(name: str) -> Path | None:
    """The checkpoint of that name bundled with the package, if it is there."""
    path = BUNDLED_DIR / f"{name}{SUFFIX}"
    return path if path.is_file() else None


def _library_version() -> str:
    from bpclip_core import __version__

    return __version__


def checkpoint_metadata(model: BPCLIP) -> dict[str, Any]:
    """The JSON metadata written into a checkpoint of ``model``."""
    card = model.card
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "adjectives": [a.to_dict() for a in card.adjectives],
        "prompt_template": card.prompt_template,
        "score_scale": card.score_scale.to_dict(),
        "provenance": card.provenance,
        "library_version": _library_version(),
    }


def new_file_mode() -> int:
    """The mode a newly created file gets: 0666 less the umask (0644 with the usual 022).

    safetensors and :func:`tempfile.mkstemp` create files 0600; files we write through a
    temporary name are given this mode instead, as ``open()`` would.
    """
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def save_checkpoint(model: BPCLIP, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically (a killed write never leaves a half file), with
    the usual file mode (:func:`new_file_mode`).

    Raises:
        ValueError: the model holds NaN or Inf weights (nothing is written: such a file could
            never be loaded, and must never replace a good one).
    """
    path = Path(path).expanduser()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    broken = non_finite_tensors(tensors)
    if broken:
        shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
        raise ValueError(f"not writing {path}: {len(broken)} of {len(tensors)} tensors hold NaN or Inf ({shown})")
    return write_checkpoint_file(tensors, checkpoint_metadata(model), path)


def write_checkpoint_file(
    tensors: dict[str, torch.Tensor], metadata: dict[str, Any], path: Path, file_mode: int | None = None
) -> Path:
    """Write tensors and BPCLIP metadata to ``path`` atomically, the tensors' digest added to the
    metadata (:func:`tensor_digest`, checked on load); ``file_mode`` defaults to :func:`new_file_mode`."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    header = {METADATA_KEY: json.dumps({**metadata, DIGEST_KEY: tensor_digest(tensors)})}
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=header)
        os.chmod(partial, new_file_mode() if file_mode is None else file_mode)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` of the tensors' names, dtypes, shapes and bytes, in name order: a
    checkpoint's integrity check (one flipped bit in a weight changes it)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def check_digest(path: Path, metadata: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` if the tensors do not match the digest in ``metadata``.

    Checkpoints written before digests existed (no key) are accepted as they are.
    """
    stored = metadata.get(DIGEST_KEY)
    if stored is None:
        return
    if stored != tensor_digest(tensors):
        raise CheckpointError(
            f"{path}: the tensors do not match the integrity digest in the checkpoint's metadata: the file "
            "was corrupted or modified after it was written; restore it from its source"
        )


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold NaN or Inf."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint file; :class:`CheckpointError` if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    _refuse_non_regular(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (corrupt or truncated?): {exc}"
        ) from exc
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path} is a safetensors file but not a BPCLIP checkpoint (no '{METADATA_KEY}' metadata)"
        )
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the BPCLIP metadata is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # e.g. 100,000 nested brackets: refused, never an internal error
        raise CheckpointError(f"{path}: the BPCLIP metadata is nested too deeply to be a checkpoint's") from exc
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: the BPCLIP metadata is not a JSON object")
    if metadata.get("format") != FORMAT or metadata.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {metadata.get('format')!r} "
            f"version {metadata.get('format_version')!r}; this bpclip reads {FORMAT} up to {FORMAT_VERSION}"
        )
    return metadata


def _refuse_non_regular(path: Path) -> None:
    """A path that exists but is a folder, FIFO or device is never read as a checkpoint."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        from bpclip_core.inputs.decoding import file_kind

        raise CheckpointError(f"checkpoint {str(path)!r} is {file_kind(mode)}, not a checkpoint file")


def resolve_checkpoint(checkpoint: str | Path | None = None, mode: str | None = None) -> Path:
    """Find the checkpoint file, following the precedence in this module's docstring.

    A path that exists but is not a regular file (a folder, a FIFO) is a :class:`CheckpointError`.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        _refuse_non_regular(path)
        if path.is_file():
            return path
        text = str(checkpoint)
        if path.suffix or os.sep in text or "/" in text:
            raise CheckpointNotFoundError.naming_the_fix(
                f"checkpoint file {str(path)!r} does not exist; pass $checkpoint with the path of an existing "
                f"checkpoint file, or the name of one in {str(checkpoint_dir())!r}",
                **_FIXES,
            )
        name = text
    else:
        from_env = os.environ.get(CHECKPOINT_ENV)
        if from_env:
            path = Path(from_env).expanduser()
            _refuse_non_regular(path)
            if path.is_file():
                return path
            raise CheckpointNotFoundError.naming_the_fix(
                f"{CHECKPOINT_ENV} names {from_env!r}, which does not exist; point it at an existing checkpoint "
                f"file, unset it to use the default model, or pass $checkpoint",
                **_FIXES,
            )
        name = default_checkpoint_name(mode)
    cached = checkpoint_dir() / f"{name}{SUFFIX}"
    _refuse_non_regular(cached)
    if cached.is_file():
        return cached
    bundled = bundled_checkpoint(name)
    if bundled is not None:
        return bundled
    raise CheckpointNotFoundError.naming_the_fix(
        f"no BPCLIP checkpoint found: no explicit path was given, {CHECKPOINT_ENV} is "
        f"{'unset' if checkpoint is None and not os.environ.get(CHECKPOINT_ENV) else 'not used'}, "
        f"{str(cached)!r} does not exist and no bundled model is named {name!r}. Pass $checkpoint, "
        f"set {CHECKPOINT_ENV}, or put the file at that place ({HOME_ENV} sets the folder). "
        + _no_weights_advice(mode),
        **_FIXES,
    )


def load_checkpoint(
    checkpoint: str | Path | None = None, mode: Mode | None = None, device: str | torch.device = "cpu"
) -> BPCLIP:
    """Load a BPCLIP model in eval mode.

    Args:
        checkpoint: a file path or the name of a checkpoint in ``$BPCLIP_HOME/checkpoints``;
            None follows the precedence (``BPCLIP_CHECKPOINT``, then the default name).
        mode: the mode the caller needs (``"nr"`` or ``"fr"``); a checkpoint of the other
            mode raises :class:`ModeMismatchError`. None accepts either.
        device: where to put the model.
    """
    from safetensors.torch import load_file

    path = resolve_checkpoint(checkpoint, mode)
    metadata = read_metadata(path)
    config, card = _config_and_card(path, metadata)
    if mode is not None and config.mode != mode:
        asked = {"fr": ("reference images or mode='fr'", "--ref"), "nr": ("mode='nr'", "no --ref")}[mode]
        raise ModeMismatchError.naming_the_fix(
            f"{path} is a {config.mode.upper()} checkpoint but {mode.upper()} scoring was asked for ($asked); "
            f"pass $use",
            asked=asked,
            use=(
                f"checkpoint= the path of a {mode.upper()} checkpoint",
                f"--checkpoint with a {mode.upper()} checkpoint",
            ),
        )
    _check_tensor_header(path, expected_tensors(config, card))  # before anything is allocated
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the tensors (corrupt or truncated?): {exc}") from exc
    for name in non_finite_tensors(tensors)[:1]:
        raise CheckpointError(f"{path}: tensor {name!r} holds NaN or Inf values; the checkpoint is broken")
    check_digest(path, metadata, tensors)
    model = BPCLIP(config, tensors["text_embeddings"], card)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not match the stored config: {exc}") from exc
    return model.to(device).eval()


def check_config_bounds(data: Any) -> None:
    """Refuse a checkpoint config of the wrong types or with sizes outside sane bounds.

    Raises:
        ValueError: naming the field, before any layer of that size is built.
    """
    if not isinstance(data, dict):
        raise ValueError(f"'config' must be a JSON object, got {type(data).__name__}")
    for name, (low, high) in CONFIG_INT_BOUNDS.items():
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"config {name} must be an integer in [{low}, {high}], got {value!r}")
    if "position_grid" in data:
        grid, (low, high) = data["position_grid"], POSITION_GRID_BOUNDS
        if (
            not isinstance(grid, list)
            or len(grid) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in grid)
        ):
            raise ValueError(f"config position_grid must be two integers in [{low}, {high}], got {grid!r}")
    if "backbone" in data and data["backbone"] not in BACKBONES:
        raise ValueError(f"config backbone must be one of {BACKBONES}, got {data['backbone']!r}")
    if "similarity_temperature" in data:
        value = data["similarity_temperature"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"config similarity_temperature must be a positive finite number, got {value!r}")
    for name in ("weight_branch", "clip_text", "learn_temperature"):
        if name in data and not isinstance(data[name], bool):
            raise ValueError(f"config {name} must be true or false, got {data[name]!r}")
    for name in ("mode", "text_model", "attention_direction"):
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"config {name} must be a string, got {data[name]!r}")


def _config_and_card(path: Path, metadata: dict[str, Any]) -> tuple[BPCLIPConfig, ModelCard]:
    """The config and model card stored in a checkpoint, every field checked."""
    try:
        check_config_bounds(metadata["config"])
        config = BPCLIPConfig.from_dict(metadata["config"])
        adjectives = metadata["adjectives"]
        if not isinstance(adjectives, list) or not 1 <= len(adjectives) <= MAX_ADJECTIVES:
            raise ValueError(f"'adjectives' must be a list of 1 to {MAX_ADJECTIVES} entries")
        if not isinstance(metadata["prompt_template"], str):
            raise ValueError("'prompt_template' must be a string")
        scale = metadata["score_scale"]
        if not isinstance(scale, dict):
            raise ValueError(f"'score_scale' must be a JSON object, got {type(scale).__name__}")
        bounds = [scale.get("mos_min", 0.0), scale.get("mos_max", 1.0)]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds):
            raise ValueError(f"score_scale mos_min and mos_max must be finite numbers, got {bounds}")
        provenance = metadata.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ValueError("'provenance' must be a JSON object")
        card = ModelCard(
            adjectives=adjectives_from_dicts(adjectives),
            prompt_template=metadata["prompt_template"],
            score_scale=ScoreScale(**scale),
            provenance=dict(provenance),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed BPCLIP metadata: {exc}") from exc
    return config, card


def expected_tensors(config: BPCLIPConfig, card: ModelCard) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Name -> (shape, is floating point) of every tensor a model of this config holds.

    Built on the meta device: nothing the config sizes is allocated. (open_clip cannot build
    on the meta device; a CLIP backbone's size is fixed by its name, so it is built for real.)
    """
    embeddings = torch.empty(len(card.adjectives), config.clip_dim, device="meta")
    backbone = build_backbone(config.backbone) if config.backbone in CLIP_BACKBONES else None
    with torch.device("meta"):
        model = BPCLIP(config, embeddings, dataclasses.replace(card), backbone or build_backbone(config.backbone))
    return {name: (tuple(t.shape), t.is_floating_point()) for name, t in model.state_dict().items()}


def _check_tensor_header(path: Path, expected: dict[str, tuple[tuple[int, ...], bool]]) -> None:
    """Compare the tensors a checkpoint's header declares with the model's, before loading them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            declared = {name: handle.get_slice(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
            header = {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in declared.items()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the tensor header (corrupt or truncated?): {exc}") from exc
    if "text_embeddings" not in header:
        raise CheckpointError(f"{path}: the checkpoint has no 'text_embeddings' tensor")
    problems = []
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing:
        problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name in sorted(set(header) & set(expected)):
        (shape, dtype), (want, is_float) = header[name], expected[name]
        if shape != want:
            problems.append(f"{name} has shape {list(shape)}, the config needs {list(want)}")
        elif dtype not in (FLOAT_DTYPES if is_float else FLOAT_DTYPES | INTEGER_DTYPES):
            kind = "a floating-point" if is_float else "a numeric"
            problems.append(f"{name} is stored as {dtype}, not {kind} type")
    if problems:
        raise CheckpointError(f"{path}: tensors do not match the stored config: {'; '.join(problems[:6])}")


def init_checkpoint(
    config: str | BPCLIPConfig,
    mode: Mode,
    out: str | Path,
    random: bool = False,
    allow_download: bool = False,
    seed: int = 0,
) -> Path:
    """Write a checkpoint of an untrained BPCLIP model: the starting point for training.

    Args:
        config: a preset name (``tiny``, ``paper``) or a config.
        mode: ``"nr"`` or ``"fr"``.
        out: the file to write.
        random: initialise everything randomly (no weight files needed). Otherwise the
            backbone gets its ImageNet (or CLIP) weights and the adjectives are embedded by
            the pretrained CLIP text tower, both read from the local caches.
        allow_download: allow downloading missing weight files.
        seed: the seed of the random initialisation of the heads.
    """
    cfg = preset(config, mode) if isinstance(config, str) else config.replace(mode=mode)
    torch.manual_seed(seed)
    backbone = build_backbone(cfg.backbone, pretrained=not random, allow_download=allow_download)
    card = ModelCard()
    text_embeddings = initial_anchors(
        cfg, card.adjectives, card.prompt_template, pretrained=not random, allow_download=allow_download
    )
    card.provenance = {
        "trained": False,
        "initialisation": "random" if random else "pretrained backbone and CLIP text tower",
        "backbone_weights": "random" if random else f"{cfg.backbone} pretrained",
        "text_embeddings": f"{cfg.text_model} ({'random' if random else 'pretrained'} text tower)"
        if cfg.clip_text
        else "learned anchors, random initialisation (no CLIP text)",
        "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_checkpoint(BPCLIP(cfg, text_embeddings, card, backbone), out)
