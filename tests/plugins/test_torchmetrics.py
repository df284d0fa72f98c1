import pickle
import warnings

import pytest
import torch
from torchmetrics import MetricCollection
from torchmetrics.image import StructuralSimilarityIndexMeasure

from bpclip_core import DIMENSIONS, CheckpointNotFoundError, InputError, ModeMismatchError
from bpclip_core.running.explain import dimension_goodness
from bpclip_core.weights.checkpoint import load_checkpoint
from bpclip_plugins.torchmetrics import BPCLIPScore, bpclip_score


def _images(n, seed=0, size=64):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _direct_scores(path, preds, target=None):
    model = load_checkpoint(path)
    with torch.inference_mode():
        return model(preds, target).score


def test_nr_metric_equals_the_model_and_the_functional(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    a, b = _images(3, 0), _images(2, 1)
    metric = BPCLIPScore(checkpoint=path)
    metric.update(a)
    metric.update(b)
    expected = _direct_scores(path, torch.cat([a, b]))
    assert torch.allclose(metric.compute(), expected.mean(), atol=1e-5)
    assert torch.allclose(bpclip_score(torch.cat([a, b]), checkpoint=path), expected.mean(), atol=1e-5)
    per_image = bpclip_score(a, checkpoint=path, reduction="none")
    assert torch.allclose(per_image, expected[:3], atol=1e-5)
    assert "UNTRAINED" in metric.model_description


def test_fr_metric_and_adjectives(tiny_checkpoints):
    path = tiny_checkpoints["fr"]
    preds, target = _images(4, 2), _images(4, 3)
    metric = BPCLIPScore(checkpoint=path, reduction="none", return_adjectives=True, top_k=2)
    metric.update(preds[:2], target[:2])
    metric.update(preds[2:], target[2:])
    out = metric.compute()
    assert torch.allclose(out["score"], _direct_scores(path, preds, target), atol=1e-5)
    assert len(out["adjectives"]) == 4 and all(len(words) == 2 for words in out["adjectives"])
    result = bpclip_score(preds, target, checkpoint=path, return_adjectives=True)
    assert result["score"].ndim == 0 and len(result["adjectives"]) == 3


def test_forward_runs_the_model_once_and_returns_the_batch_value(tiny_checkpoints):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"])
    model = metric._engine().model
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        batch_value = metric(_images(2, 5))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert torch.allclose(batch_value, metric.compute(), atol=1e-6)
    assert BPCLIPScore.full_state_update is False and BPCLIPScore.higher_is_better is True


def test_rejected_updates_leave_the_state_intact(tiny_checkpoints):
    nr, fr = tiny_checkpoints["nr"], tiny_checkpoints["fr"]
    metric = BPCLIPScore(checkpoint=nr)
    good = _images(2, 7)
    metric.update(good)
    with pytest.raises(InputError, match="values must lie in"):
        metric.update(good * 3)
    with pytest.raises(InputError, match="3 \\(RGB\\) channels"):
        metric.update(good[:, :1])
    assert int(metric.total) == 2
    assert torch.allclose(metric.compute(), _direct_scores(nr, good).mean(), atol=1e-5)
    fr_metric = BPCLIPScore(checkpoint=fr)
    with pytest.raises(InputError, match="with reference images"):
        fr_metric.update(good)
    with pytest.raises(InputError, match="same shape"):
        fr_metric.update(good, good[:1])
    with pytest.raises(ModeMismatchError):
        BPCLIPScore(checkpoint=fr, mode="nr")
    with pytest.raises(ValueError, match="reduction"):
        BPCLIPScore(checkpoint=nr, reduction="max")
    with pytest.raises(ValueError, match="data_range"):
        BPCLIPScore(checkpoint=nr, data_range=(1.0, 0.0))


def test_data_range_255(tiny_checkpoints):
    images = _images(2, 8)
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], data_range=255.0)
    metric.update(images * 255)
    assert torch.allclose(metric.compute(), bpclip_score(images, checkpoint=tiny_checkpoints["nr"]), atol=1e-5)


def test_collection_clone_pickle_to_and_state_dict(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    images = _images(2, 9)
    collection = MetricCollection({"bpclip": BPCLIPScore(checkpoint=path)})
    collection.update(images)
    value = collection.compute()["bpclip"]
    metric = BPCLIPScore(checkpoint=path)
    metric.update(images)
    clone = metric.clone()
    restored = pickle.loads(pickle.dumps(metric))
    assert torch.equal(clone.compute(), metric.compute()) and torch.equal(restored.compute(), metric.compute())
    assert torch.allclose(value, metric.compute())
    metric = metric.to("cpu")
    metric.update(images)
    assert int(metric.total) == 4
    keys = set(BPCLIPScore(checkpoint=path).state_dict()) | set(metric.state_dict())
    assert not any("backbone" in k or "weight" in k for k in keys)
    assert len(pickle.dumps(metric)) < 100_000  # no model weights inside


def test_plot(tiny_checkpoints):
    pytest.importorskip("matplotlib")
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"])
    values = []
    for seed in range(3):
        metric.update(_images(2, seed))
        values.append(metric.compute())
    fig, ax = metric.plot(values)
    assert ax.get_ylim()[0] <= 0.0 and fig is not None


def test_no_argument_scores_with_the_bundled_model_and_zero_shot_only_when_asked(planted_clip_rn50):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the bundled model is the documented default
        metric = BPCLIPScore()
    assert "bpclip-nr" in metric.model_description and "zero-shot" not in metric.model_description
    metric.update(_images(2, 1))
    assert 0 <= float(metric.compute()) <= 1
    assert "zero-shot CLIP" in BPCLIPScore(zero_shot=True).model_description
    assert "bpclip-fr" in BPCLIPScore(mode="fr").model_description
    with pytest.raises(CheckpointNotFoundError):
        BPCLIPScore(checkpoint="missing-name")


@pytest.mark.parametrize("reduction", ["elementwise_mean", "sum", "none", None])
def test_reductions_as_in_torchmetrics_ssim(tiny_checkpoints, reduction):
    path = tiny_checkpoints["nr"]
    a, b = _images(3, 10), _images(2, 11)
    expected = _direct_scores(path, torch.cat([a, b]))
    want = {"elementwise_mean": expected.mean(), "sum": expected.sum(), "none": expected, None: expected}[reduction]
    metric = BPCLIPScore(checkpoint=path, reduction=reduction)
    metric.update(a)
    metric.update(b)
    assert torch.allclose(metric.compute(), want, atol=1e-4)
    assert torch.allclose(bpclip_score(torch.cat([a, b]), checkpoint=path, reduction=reduction), want, atol=1e-4)
    StructuralSimilarityIndexMeasure(reduction=reduction)  # the same names are accepted by the built-in


def test_data_range_as_a_min_max_tuple(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    images = _images(2, 12)
    signed = images * 2 - 1  # in [-1, 1]
    metric = BPCLIPScore(checkpoint=path, data_range=(-1.0, 1.0), reduction="none")
    metric.update(signed)
    expected = _direct_scores(path, images)
    assert torch.allclose(metric.compute(), expected, atol=1e-4)
    out_of_range = signed.clone()
    out_of_range[:, :, :4] = 3.0  # clamped to the range, as SSIM does with a tuple
    clamped = (out_of_range.clamp(-1, 1) + 1) / 2
    got = bpclip_score(out_of_range, checkpoint=path, data_range=(-1.0, 1.0), reduction="none")
    assert torch.allclose(got, _direct_scores(path, clamped), atol=1e-4)


@pytest.mark.parametrize("reduction", ["elementwise_mean", "sum", "none"])
def test_compute_before_update_behaves_as_the_built_ins(tiny_checkpoints, reduction):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], reduction=reduction)
    with pytest.warns(UserWarning, match="before the ``update``"):
        value = metric.compute()
    if reduction == "elementwise_mean":
        with pytest.warns(UserWarning, match="before the ``update``"):
            builtin = StructuralSimilarityIndexMeasure(data_range=1.0).compute()
        assert torch.isnan(value) and torch.isnan(builtin)
    elif reduction == "sum":
        assert float(value) == 0.0
    else:
        assert value.shape == (0,)
    adjectives = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], reduction=reduction, return_adjectives=True)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert adjectives.compute()["adjectives"] == []


def test_plot_with_return_adjectives(tiny_checkpoints):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], return_adjectives=True)
    values = [metric(_images(2, seed)) for seed in range(3)]
    assert all(isinstance(v, dict) for v in values)
    fig, _ = metric.plot(values)
    assert fig is not None
    fig, _ = metric.plot()  # compute() gives a dict too
    assert fig is not None
    fig, _ = metric.plot(metric.compute())
    assert fig is not None


def test_is_differentiable_and_gradients_flow(tiny_checkpoints):
    assert BPCLIPScore.is_differentiable is True
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"])
    x = _images(2, 13).requires_grad_()
    value = metric(x)  # forward: the batch value keeps the graph, as in torchmetrics' SSIM
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric._engine().model.parameters())  # shared weights stay frozen
    y = _images(2, 14).requires_grad_()
    bpclip_score(y, checkpoint=tiny_checkpoints["nr"]).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    fr = BPCLIPScore(checkpoint=tiny_checkpoints["fr"])
    preds, target = _images(2, 15).requires_grad_(), _images(2, 16)
    fr(preds, target).backward()
    assert preds.grad.abs().sum() > 0
    plain = metric(_images(2, 17))  # inputs without grad: the inference path, no graph
    assert not plain.requires_grad


def test_nr_metric_in_a_collection_ignores_the_target_with_one_warning(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    collection = MetricCollection(
        {"bpclip": BPCLIPScore(checkpoint=path), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)}
    )
    preds, target = _images(2, 18), _images(2, 19)
    with pytest.warns(UserWarning, match="target passed to it is ignored") as caught:
        collection(preds, target=target)
        collection.update(preds, target)
    assert sum("ignored" in str(w.message) for w in caught) == 1
    values = collection.compute()
    assert torch.allclose(values["bpclip"], _direct_scores(path, preds).mean(), atol=1e-5)
    assert "ssim" in values


# per-dimension scores (issue 29.3), as CLIP-IQA's per-prompt dict


def _expected_goodness(path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    model = load_checkpoint(path)
    with torch.inference_mode():
        return dimension_goodness(model(images).adjective_probabilities, model.card.adjectives)


@pytest.mark.parametrize("reduction", ["elementwise_mean", "sum", "none"])
def test_torchmetrics_returns_each_dimension_reduced_like_the_score(tiny_checkpoints, reduction):
    path = tiny_checkpoints["nr"]
    a, b = _images(3, 0), _images(2, 1)
    expected = _expected_goodness(path, torch.cat([a, b]))
    reduce = {"elementwise_mean": torch.mean, "sum": torch.sum, "none": lambda v: v}[reduction]
    metric = BPCLIPScore(checkpoint=path, reduction=reduction, return_dimensions=True)
    metric.update(a)
    batch = metric(b)  # forward: the batch's value, also a dict
    assert set(batch) == {"score", *DIMENSIONS}
    result = metric.compute()
    functional = bpclip_score(torch.cat([a, b]), checkpoint=path, reduction=reduction, return_dimensions=True)
    assert list(result) == ["score", *DIMENSIONS] and list(functional) == ["score", *DIMENSIONS]
    for dim in DIMENSIONS:
        assert torch.allclose(result[dim], reduce(expected[dim]), atol=1e-4), dim
        assert torch.allclose(functional[dim], reduce(expected[dim]), atol=1e-4), dim
    both = BPCLIPScore(checkpoint=path, return_dimensions=True, return_adjectives=True)
    both.update(a)
    assert set(both.compute()) == {"score", "adjectives", *DIMENSIONS}


def test_torchmetrics_dimension_state_is_small_and_summed_across_processes(tiny_checkpoints):
    metric = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], return_dimensions=True)
    assert metric._reductions["goodness_sum"].__name__ == "dim_zero_sum"  # DDP: summed, like score_sum
    assert metric.goodness_sum.shape == (len(DIMENSIONS),)
    every = BPCLIPScore(checkpoint=tiny_checkpoints["nr"], reduction="none", return_dimensions=True)
    assert "goodness_sum" not in every._defaults  # "none": computed from the gathered probabilities
    assert "goodness_sum" not in BPCLIPScore(checkpoint=tiny_checkpoints["nr"])._defaults
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = metric.compute()
    assert all(torch.isnan(empty[dim]) for dim in DIMENSIONS)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(v.numel() == 0 for k, v in every.compute().items())


def test_torchmetrics_dimensions_are_differentiable(tiny_checkpoints):
    images = _images(2, 3).requires_grad_(True)
    result = bpclip_score(images, checkpoint=tiny_checkpoints["nr"], return_dimensions=True)
    result["sharpness"].backward()
    assert images.grad is not None and bool(images.grad.abs().sum() > 0)


def test_an_unknown_mode_names_the_valid_modes():
    # before: "no bundled model is named 'bpclip-xx'", found while resolving the checkpoint
    with pytest.raises(ValueError, match=r"mode must be one of 'nr', 'fr' .*got 'xx'"):
        BPCLIPScore(mode="xx")


def test_uint8_tensors_are_read_as_0_to_255(tiny_checkpoints):
    path = tiny_checkpoints["nr"]
    pixels = (_images(2, 20) * 255).round().byte()
    expected = _direct_scores(path, pixels.float() / 255)
    metric = BPCLIPScore(checkpoint=path, reduction="none")  # the default data_range=1.0
    metric.update(pixels)
    assert torch.allclose(metric.compute(), expected, atol=1e-5)
    assert torch.allclose(bpclip_score(pixels, checkpoint=path, reduction="none"), expected, atol=1e-5)
    ranged = bpclip_score(pixels, checkpoint=path, data_range=(-1.0, 1.0), reduction="none")  # floats' scale only
    assert torch.allclose(ranged, expected, atol=1e-5)
