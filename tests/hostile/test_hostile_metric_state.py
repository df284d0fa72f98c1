"""BPCLIPScore on rejected batches: a batch that forward() or update() refuses leaves the state as it was."""

from __future__ import annotations

import warnings

import pytest
import torch

from bpclip_core import InputError
from bpclip_plugins.torchmetrics import BPCLIPScore

REJECTED = {
    "NaN": (torch.full((2, 3, 64, 64), float("nan")), "NaN"),
    "empty batch": (torch.zeros(0, 3, 64, 64), "empty batch"),
    "out of range": (torch.full((1, 3, 64, 64), 2.0), "values must lie in"),
    "complex": (torch.zeros(1, 3, 64, 64, dtype=torch.complex64), "complex"),
}


def _images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=generator), size=(64, 64), mode="bilinear")


def _state(metric: BPCLIPScore) -> dict:
    """The accumulated states (list states concatenated) and the update count, as plain values."""
    state = {}
    for name in metric._defaults:
        value = getattr(metric, name)
        state[name] = (torch.cat(value) if value else torch.zeros(0)) if isinstance(value, list) else value.clone()
    return {**state, "update_count": metric.update_count}


def _assert_same_state(metric: BPCLIPScore, before: dict) -> None:
    after = _state(metric)
    assert after.keys() == before.keys()
    for name, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[name], value), name
        else:
            assert after[name] == value, name


@pytest.mark.parametrize("reduction", ["elementwise_mean", "none"])
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_forward_keeps_the_accumulated_state(tiny_checkpoints, reduction, case):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], reduction=reduction, compute_on_cpu=True)
    good = [_images(2, 0), _images(2, 1)]
    for batch in good:
        metric(batch)
    before, value = _state(metric), metric.compute()
    assert int(before["total"]) == 4
    bad, phrase = REJECTED[case]
    with pytest.raises(InputError, match=phrase):
        metric(bad)
    _assert_same_state(metric, before)
    assert torch.equal(metric.compute(), value)
    # torchmetrics' own bookkeeping is back too: update() runs without gradients again, lists stay on the CPU
    assert metric.compute_on_cpu is True and metric._enable_grad is False
    metric.update(_images(1, 2).requires_grad_())
    assert not metric.score_sum.requires_grad
    fresh = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], reduction=reduction)
    fresh.update(torch.cat([*good, _images(1, 2)]))
    assert torch.allclose(metric.compute(), fresh.compute(), atol=1e-6)


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_update_keeps_the_state_and_does_not_count(tiny_checkpoints, case):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"])
    bad, phrase = REJECTED[case]
    with pytest.raises(InputError, match=phrase):
        metric.update(bad)
    assert metric.update_count == 0
    with pytest.warns(UserWarning, match="before the ``update``"):  # still "computed before any update"
        assert torch.isnan(metric.compute())
    metric.update(_images(2, 3))
    before = _state(metric)
    with pytest.raises(InputError, match=phrase):
        metric.update(bad)
    _assert_same_state(metric, before)


def test_rejected_full_reference_forward_keeps_the_state(tiny_checkpoints):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["fr"])
    preds, target = _images(2, 4), _images(2, 5)
    metric(preds, target)
    before, value = _state(metric), metric.compute()
    with pytest.raises(InputError, match="same shape"):
        metric(preds, target[:1])
    with pytest.raises(InputError, match="NaN"):
        metric(preds, torch.full_like(target, float("nan")))
    _assert_same_state(metric, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the state is one of updates made: no "before update" warning
        assert torch.equal(metric.compute(), value)
