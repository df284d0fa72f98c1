"""One test-time protocol: reported figures and users' scores come from the same input geometry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bpclip_core.choices import DEFAULT_PROTOCOL
from bpclip_core.data.readers import read_dataset
from bpclip_core.errors import InputError
from bpclip_core.inputs.protocol import TestTimeProtocol
from bpclip_core.running.engine import QualityEngine
from bpclip_core.training import TrainConfig, evaluation, train
from bpclip_core.training.evaluation import evaluate_model, predict, score_items
from bpclip_core.weights.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def larger_csv(tmp_path_factory, pristine_dir):
    """FR items at 96 px, larger than the tiny model's 64 px, so the protocol's resize matters."""
    from bpclip_core.data.synthetic import synthesize_dataset

    return synthesize_dataset(
        pristine_dir, tmp_path_factory.mktemp("larger"), ["gaussian_blur"], levels=[1, 4], size=96
    )


def test_one_default_protocol_everywhere(model_factory):
    assert TestTimeProtocol().name == DEFAULT_PROTOCOL == TrainConfig().eval_protocol
    assert QualityEngine(model_factory("nr"), device="cpu").protocol.name == DEFAULT_PROTOCOL
    with pytest.raises(ValueError, match="center-crop' was retired"):
        TrainConfig(eval_protocol="center-crop")


@pytest.mark.parametrize("mode", ["fr", "nr"])
@pytest.mark.parametrize("protocol", ["resize", "crops"])
def test_evaluation_scores_are_the_engines_scores(larger_csv, mode, protocol, model_factory, monkeypatch):
    dataset = read_dataset("csv", str(larger_csv))
    model = model_factory(mode)
    test_time = TestTimeProtocol(protocol, size=64, num_crops=3)
    shapes: list[tuple[int, ...]] = []
    cut = TestTimeProtocol.batch_views

    def record(self, images, references=None):
        views, ref_views, counts = cut(self, images, references)
        shapes.append(tuple(views.shape[1:]))
        return views, ref_views, counts

    monkeypatch.setattr(TestTimeProtocol, "batch_views", record)
    predictions = predict(model, dataset, test_time, batch_size=5)
    # the 96 px pictures reach the model as the protocol cuts them (not a crop of the raw picture)
    assert set(shapes) == {(3, 64, 64)} and len(shapes) == len(dataset)
    engine = QualityEngine(model, device="cpu", protocol=test_time, num_workers=0)
    references = [item.reference for item in dataset.items] if mode == "fr" else None
    users = [r.score for r in engine.score([item.image for item in dataset.items], references)]
    assert predictions == pytest.approx(users, abs=1e-5)
    assert np.ptp(predictions) > 0  # the random model does tell the items apart


def test_evaluation_keeps_the_models_train_mode_and_survives_non_finite_scores(larger_csv, model_factory):
    dataset = read_dataset("csv", str(larger_csv)).subset([0, 1, 2, 3])
    model = model_factory("fr").train()
    with torch.no_grad():
        model.regressor.parameters().__next__().fill_(float("nan"))
    predictions = predict(model, dataset)
    assert model.training
    assert np.isnan(predictions).all()


def test_an_unreadable_item_names_its_file(larger_csv, tmp_path, model_factory):
    dataset = read_dataset("csv", str(larger_csv)).subset([0, 1, 2])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    dataset.items[1] = dataclasses.replace(dataset.items[1], image=broken)
    with pytest.raises(InputError, match=r"1 of 3 synthetic items could not be scored; first: \S*broken.png: not an"):
        score_items(model_factory("fr"), dataset)


def test_training_validation_and_test_use_the_engines_protocol(small_synthetic_csv, tmp_path, monkeypatch):
    seen: list[TestTimeProtocol] = []
    original = evaluation.predict

    def spy(model, dataset, protocol=None, *args, **kwargs):
        seen.append(protocol)
        return original(model, dataset, protocol, *args, **kwargs)

    monkeypatch.setattr(evaluation, "predict", spy)
    config = TrainConfig(
        dataset="csv", dataset_root=str(small_synthetic_csv), model="tiny", pretrained=False, epochs=1,
        batch_size=8, patch_size=48, cache_images=True, progress=False, max_steps_per_epoch=1,
        split_ratios=[0.6, 0.2, 0.2], out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    result = train(config)
    assert len(seen) == 2  # one validation, one test
    assert all(p == TestTimeProtocol(DEFAULT_PROTOCOL, size=64) for p in seen)  # the model's size, not the patch
    # the reported test figure is what `bpclip evaluate` (the engine, its default protocol) says
    test_items = json.loads((tmp_path / "run" / "split.json").read_text())["test"]
    best = load_checkpoint(result.best_checkpoint)
    metrics, _ = evaluate_model(best, read_dataset("csv", str(small_synthetic_csv)).subset(test_items))
    assert metrics["srcc"] == pytest.approx(result.test_metrics["srcc"], abs=1e-9)
