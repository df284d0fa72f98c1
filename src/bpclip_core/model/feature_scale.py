"""Keep a model's feature maps inside float16's range by an exact change of scale.

A backbone trained with frozen BatchNorm (our random-initialisation recipe) can grow its
feature scale while its convolutions train: the bundled FR model of 2026-11-28 had level-5
activations up to 5e5, beyond float16's largest value (65504), so under fp16 autocast (GPUs
without bfloat16) every score was NaN. The same network is a chain of frozen-BatchNorm affine
maps, bias-free convolutions, ReLUs and poolings, so dividing every BatchNorm's shift (and its
running mean, where its input is already divided) by c divides every feature map by c; the
first layers of the heads that read the levels (gate and W_f for NR, gate and the token
reduction for FR) take weights multiplied by c. With c a power of two the model's function is
unchanged bit for bit in float32, and its activations fit float16.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from bpclip_core.model.bpclip import BPCLIP
from bpclip_core.model.gated_pooling import GatedLocalPoolingNR

# the largest activation a rescaled model should show on the probe images: 16x under float16's
# largest value, headroom for images that excite the network more than the probes
FP16_SAFE_PEAK = 2.0**12


def peak_activation(model: BPCLIP, images: Iterable[torch.Tensor]) -> float:
    """The largest |value| of any backbone layer's output over ``images`` (batches in [0, 1]), in float32."""
    peak = 0.0

    def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal peak
        if isinstance(output, torch.Tensor):
            peak = max(peak, float(output.detach().abs().max()))

    leaves = [m for m in model.backbone.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            for batch in images:
                model.backbone(batch.float())
    finally:
        for handle in handles:
            handle.remove()
    return peak


def _check_rescalable(backbone: nn.Module) -> list[nn.BatchNorm2d]:
    if any(isinstance(m, nn.Conv2d) and m.bias is not None for m in backbone.modules()):
        raise ValueError("the backbone has convolutions with a bias: its feature scale cannot be changed exactly")
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms or any(norm.training or not norm.track_running_stats for norm in norms):
        raise ValueError("the backbone's BatchNorm must be frozen (eval mode with running statistics)")
    return norms


def rescale_features(model: BPCLIP, factor: float) -> None:
    """Divide every backbone feature map by ``factor`` (a power of two), compensated in the heads.

    In place; the model computes the same scores (bit for bit in float32).
    """
    if not (factor > 0 and math.isfinite(factor) and math.log2(factor).is_integer()):
        raise ValueError(f"the factor must be a power of two, got {factor}")
    if factor == 1:
        return
    norms = _check_rescalable(model.backbone)
    with torch.no_grad():
        first, *rest = norms  # the stem's first BatchNorm reads the (unscaled) image path
        first.weight.div_(factor)
        first.bias.div_(factor)
        for norm in rest:  # inputs already divided: shift the mean and the offset with them
            norm.running_mean.div_(factor)
            norm.bias.div_(factor)
        for pooling, tokenizer in zip(model.gated_pooling, model.tokenizers):
            pooling.gate.block[0].weight.mul_(factor)  # phi_i reads F_i (NR) or |F^d - F^r| (FR)
            if isinstance(pooling, GatedLocalPoolingNR):
                pooling.feature_transform.weight.mul_(factor)  # W_f F_i, eq. 2
            else:
                tokenizer.reduce.weight.mul_(factor)  # the pooled F^d ⊕ F^r ⊕ |F^d - F^r|, eq. 1


def fit_half_precision(model: BPCLIP, images: Iterable[torch.Tensor], peak: float = FP16_SAFE_PEAK) -> float:
    """Rescale ``model`` (in place) so that its largest activation on ``images`` is at most ``peak``.

    Returns the factor applied (1.0: already inside; the scale is never raised).
    """
    factor = half_precision_factor(peak_activation(model, images), peak)
    rescale_features(model, factor)
    return factor


def half_precision_factor(measured: float, peak: float = FP16_SAFE_PEAK) -> float:
    """The smallest power of two that brings a measured peak activation to at most ``peak`` (1.0 if it is)."""
    if not math.isfinite(measured):
        raise ValueError("the backbone gives non-finite activations on the probe images even in float32")
    return 2.0 ** math.ceil(math.log2(measured / peak)) if measured > peak else 1.0


def probe_images(references: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """Probe batches: the given (3, H, W) images in [0, 1] plus extremes of the same size (uniform
    noise, black, white, saturated colour bars), which drive some channels harder than photos do."""
    if not references:
        raise ValueError("no probe images")
    height, width = references[0].shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    colours = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0))
    bars = torch.zeros(3, height, width)
    for index, colour in enumerate(colours):
        bars[:, :, index * width // 6 : (index + 1) * width // 6] = torch.tensor(colour).view(3, 1, 1)
    extremes = [torch.rand(3, height, width, generator=generator), torch.zeros(3, height, width)]
    extremes += [torch.ones(3, height, width), bars]
    stacked = torch.stack([*references, *extremes])
    return list(stacked.split(16))
