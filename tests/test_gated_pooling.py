import pytest
import torch
import torch.nn.functional as F

from bpclip_core.model import gated_pooling
from bpclip_core.model.gated_pooling import (
    GatedLocalPoolingFR,
    GatedLocalPoolingNR,
    LearnedPositionalEncoding,
    LevelTokenizer,
    masked_window_means,
)


def test_nr_gate_is_a_sigmoid_mask_times_transformed_features():  # eq. 2
    torch.manual_seed(0)
    glp = GatedLocalPoolingNR(16, reduction=4)
    features = torch.randn(2, 16, 8, 12)
    mask = torch.sigmoid(glp.gate(features))
    assert mask.shape == (2, 1, 8, 12)
    assert bool(((mask > 0) & (mask < 1)).all())
    literal = mask * glp.feature_transform(features)
    assert torch.allclose(glp.gated(features), literal)
    # the pooled fast path equals pooling the literal eq. 2 map
    assert torch.allclose(glp(features, (2, 3)), F.adaptive_avg_pool2d(literal, (2, 3)), atol=1e-5)
    assert glp.out_channels == 16


def test_nr_gate_with_the_reduction_composed_equals_gating_then_reducing():
    torch.manual_seed(0)
    glp, reduce = GatedLocalPoolingNR(16, reduction=4), torch.nn.Conv2d(16, 6, 1)
    features = torch.randn(3, 16, 8, 12)
    for grid in ((1, 1), (4, 6)):  # few positions: mixed twice; many: one composed map
        expected = reduce(F.adaptive_avg_pool2d(glp.gated(features), grid))
        assert torch.allclose(glp(features, grid, reduce), expected, atol=1e-5)
        with torch.inference_mode():
            assert torch.allclose(glp(features, grid, reduce), expected, atol=1e-5)
    loss = glp(features, (4, 6), reduce).square().sum()
    loss.backward()
    assert glp.feature_transform.weight.grad.abs().sum() > 0 and reduce.weight.grad.abs().sum() > 0
    with torch.no_grad():  # the cached product follows in-place weight updates (optimiser steps)
        glp.feature_transform.weight.mul_(2)
        reduce.weight.add_(0.5)
    expected = reduce(F.adaptive_avg_pool2d(glp.gated(features), (4, 6)))
    with torch.inference_mode():
        assert torch.allclose(glp(features, (4, 6), reduce), expected, atol=1e-4)


def test_fr_gate_concatenates_distorted_reference_and_difference():  # eq. 1
    torch.manual_seed(0)
    glp = GatedLocalPoolingFR(8, reduction=4)
    distorted, reference = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    literal = glp.gated(distorted, reference)
    assert literal.shape == (2, 24, 6, 6) and glp.out_channels == 24
    mask = torch.sigmoid(glp.gate((distorted - reference).abs()))
    assert torch.allclose(literal[:, 16:], mask * (distorted - reference).abs())
    assert torch.allclose(glp(distorted, reference, (3, 3)), F.adaptive_avg_pool2d(literal, (3, 3)), atol=1e-6)
    same = glp(distorted, distorted, (3, 3))
    assert torch.count_nonzero(same[:, 16:]) == 0  # identical inputs: the difference part is zero
    assert torch.allclose(same[:, :8], same[:, 8:16])


@pytest.mark.parametrize("size", [(24, 36), (25, 37), (19, 13)])  # equal windows, adaptive ones, overlapping ones
@pytest.mark.parametrize("channels_last", [True, False])
def test_masked_window_means_equal_multiplying_then_adaptive_pooling(size, channels_last):
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    parts = [torch.randn(2, c, *size).contiguous(memory_format=layout).requires_grad_() for c in (5, 3)]
    mask = torch.rand(2, 1, *size).contiguous(memory_format=layout).requires_grad_()
    grid = (3, 4)  # 16 pixels or more per window: channels_last parts take the matrix-product path
    pooled = masked_window_means(parts, mask, grid)
    expected = [F.adaptive_avg_pool2d(p * mask, grid) for p in parts]
    for got, want in zip(pooled, expected):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6)
    grads = torch.autograd.grad(sum(g.square().sum() for g in pooled), [*parts, mask])
    want_grads = torch.autograd.grad(sum(w.square().sum() for w in expected), [*parts, mask])
    for got, want in zip(grads, want_grads):
        assert torch.allclose(got, want, atol=1e-5)


def test_fr_inference_in_chunks_equals_the_whole_batch(monkeypatch):
    torch.manual_seed(0)
    glp = GatedLocalPoolingFR(8, reduction=4)
    distorted, reference = torch.randn(5, 8, 16, 20), torch.randn(5, 8, 16, 20)
    expected = F.adaptive_avg_pool2d(glp.gated(distorted, reference), (4, 5))
    image_bytes = 8 * 16 * 20 * 4
    monkeypatch.setattr(gated_pooling, "CHUNK_BYTES", 2 * image_bytes)  # chunks of 2, 2 and 1 images
    calls = []
    glp.gate.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    with torch.inference_mode():
        chunked = glp(distorted, reference, (4, 5))
    assert calls == [2, 2, 1]
    assert torch.allclose(chunked, expected, atol=1e-6)


def test_tokens_are_the_reduced_pooled_grid():
    torch.manual_seed(0)
    tokenizer = LevelTokenizer(12, token_dim=10)
    pooled = torch.randn(2, 12, 2, 3)
    tokens = tokenizer(pooled)
    assert tokens.shape == (2, 6, 10)
    assert torch.allclose(tokens[:, 4], F.gelu(tokenizer.reduce(pooled)[:, :, 1, 1]), atol=1e-6)  # Fig. 3
    linear = LevelTokenizer(12, token_dim=10, figures=False)
    assert torch.allclose(linear(pooled)[:, 4], linear.reduce(pooled)[:, :, 1, 1], atol=1e-6)


def test_positional_encoding_is_resized_to_the_grid():
    pos = LearnedPositionalEncoding(8, (2, 2))
    assert pos((2, 2)).shape == (1, 4, 8)
    assert torch.equal(pos((2, 2)), pos.embedding.flatten(2).transpose(1, 2))
    assert pos((3, 5)).shape == (1, 15, 8)
