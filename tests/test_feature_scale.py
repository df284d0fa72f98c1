"""The exact feature-scale change that keeps a model inside float16's range (feature_scale.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bpclip_core.model.feature_scale import (
    FP16_SAFE_PEAK,
    fit_half_precision,
    peak_activation,
    probe_images,
    rescale_features,
)
from bpclip_core.running.engine import FP16_HINT, NON_FINITE_ERROR, QualityEngine

FP16 = torch.finfo(torch.float16).max


def _overflowing(model):
    """The model with its features 2^20 times larger: the drift a frozen-BatchNorm backbone can
    go through in training (the bundled FR model of 2026-11-28 peaked at 5e5)."""
    stem_norm = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        stem_norm.weight.mul_(2.0**20)
        stem_norm.bias.mul_(2.0**20)
    return model


def _scores(model, images, mode, dtype=None):
    reference = images.flip(-1) if mode == "fr" else None
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(images, reference).score


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_rescaling_is_exact_in_float32(model_factory, images, mode):
    model = model_factory(mode)
    before = _scores(model, images, mode)
    with torch.no_grad():
        levels = model.backbone(images)
        rescale_features(model, 8.0)
        rescaled = model.backbone(images)
    assert torch.equal(_scores(model, images, mode), before)  # powers of two: the same floats
    assert all(torch.equal(new * 8, old) for new, old in zip(rescaled, levels))


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_an_overflowing_model_is_fitted_to_float16(model_factory, images, mode):
    model = _overflowing(model_factory(mode))
    probes = probe_images(list(images))
    assert peak_activation(model, probes) > FP16
    full = _scores(model, images, mode)
    assert torch.isfinite(full).all()
    assert not torch.isfinite(_scores(model, images, mode, torch.float16)).all()  # the bug: NaN under fp16

    factor = fit_half_precision(model, probes)
    assert factor > 1 and peak_activation(model, probes) <= FP16_SAFE_PEAK
    assert torch.equal(_scores(model, images, mode), full)
    half = _scores(model, images, mode, torch.float16)
    assert torch.isfinite(half).all()
    assert torch.allclose(half, full, atol=0.02)
    assert fit_half_precision(model, probes) == 1.0  # never raised again


def test_bad_factors_and_backbones_are_refused(model_factory):
    model = model_factory("nr")
    with pytest.raises(ValueError, match="power of two"):
        rescale_features(model, 3.0)
    with pytest.raises(ValueError, match="power of two"):
        rescale_features(model, 0.0)
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    first_conv.bias = nn.Parameter(torch.zeros(first_conv.out_channels))
    with pytest.raises(ValueError, match="bias"):
        rescale_features(model, 2.0)


def test_probe_images_add_extremes_in_batches():
    references = [torch.full((3, 20, 24), 0.5) for _ in range(30)]
    batches = probe_images(references)
    stacked = torch.cat(batches)
    assert stacked.shape == (34, 3, 20, 24) and all(len(b) <= 16 for b in batches)
    assert stacked.min() == 0 and stacked.max() == 1
    with pytest.raises(ValueError, match="no probe"):
        probe_images([])


def test_the_engine_names_fp16_overflow_in_the_error(model_factory, images):
    model = _overflowing(model_factory("nr"))
    [half] = QualityEngine(model, device="cpu", precision="fp16", num_workers=0).score(images[:1])
    assert half.score is None and half.error.startswith(NON_FINITE_ERROR) and half.error.endswith(FP16_HINT)
    fit_half_precision(model, probe_images(list(images)))
    [fitted] = QualityEngine(model, device="cpu", precision="fp16", num_workers=0).score(images[:1])
    [full] = QualityEngine(model, device="cpu", precision="fp32", num_workers=0).score(images[:1])
    assert fitted.error is None and fitted.score == pytest.approx(full.score, abs=0.02)
