import pickle
import warnings

import pytest
import torch
from torchmetrics import MetricCollection

from bpclip_core import CheckpointNotFoundError, InputError, ModeMismatchError
from bpclip_core.checkpoint import load_checkpoint
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
    with pytest.raises(InputError, match="without a target"):
        metric.update(good, good)
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
        BPCLIPScore(checkpoint=nr, reduction="sum")
    with pytest.raises(RuntimeError, match="before any update"):
        BPCLIPScore(checkpoint=nr).compute()


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
