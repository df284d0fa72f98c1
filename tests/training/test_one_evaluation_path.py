"""One evaluation path (issue 30 item 2): training's validation and test, ``bpclip evaluate`` and
the checks of the rebuild score through :class:`QualityEngine` with the same protocol objects,
and scoring a model in training leaves it, and its training, as they were."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from bpclip_core.cli import main
from bpclip_core.data.readers import read_dataset
from bpclip_core.inputs.protocol import TestTimeProtocol
from bpclip_core.running.engine import QualityEngine
from bpclip_core.training import TrainConfig, train
from bpclip_core.training.default_models import dead_levels
from bpclip_core.training.evaluation import dataset_targets, quality_metrics, score_items
from bpclip_core.training.trainer import TensorOutputs, train_step

CROPS = TestTimeProtocol("crops", size=64, num_crops=2)  # not the default: the protocol must reach every path


def _users_scores(checkpoint, dataset) -> np.ndarray:
    """What a user gets for these items: the engine as front ends build it (its default
    attention, layout and BatchNorm folding), from the checkpoint file, under :data:`CROPS`."""
    engine = QualityEngine.from_checkpoint(checkpoint, device="cpu", precision="fp32", num_workers=0, protocol=CROPS)
    references = [item.reference for item in dataset.items] if engine.mode == "fr" else None
    results = engine.score([item.image for item in dataset.items], references)
    assert all(r.score is not None for r in results)
    return np.array([r.score for r in results])


@pytest.fixture
def blur_csv(small_synthetic_csv, tmp_path):
    """The blurred items of levels 1, 3 and 5 (24 of 80, absolute paths): a quick dataset."""
    with small_synthetic_csv.open(newline="") as handle:
        rows = [
            r for r in csv.DictReader(handle) if r["distortion"] == "gaussian_blur" and r["level"] in ("1", "3", "5")
        ]
    for row in rows:
        row["image"], row["ref"] = (str(small_synthetic_csv.parent / row[k]) for k in ("image", "ref"))
    path = tmp_path / "blur.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_validation_test_and_bpclip_evaluate_give_the_engines_numbers(blur_csv, tmp_path, capsys):
    out = tmp_path / "run"
    config = TrainConfig(
        dataset="csv", dataset_root=str(blur_csv), model="tiny", pretrained=False, epochs=1,
        batch_size=8, patch_size=48, cache_images=True, progress=False, max_steps_per_epoch=1,
        split_ratios=[0.5, 0.25, 0.25], out_dir=str(out), eval_protocol="crops", eval_num_crops=2,
    )  # fmt: skip
    result = train(config)
    dataset = read_dataset("csv", str(blur_csv))
    users = _users_scores(result.best_checkpoint, dataset)
    split = json.loads((out / "split.json").read_text())
    # validation (the in-memory model after epoch 1, kept as best.safetensors)
    val = dataset.subset(split["val"])
    val_metrics = quality_metrics(users[split["val"]], *dataset_targets(val))
    row = result.history[0]
    assert row["val_srcc"] == pytest.approx(val_metrics["srcc"], abs=1e-5)
    assert row["val_plcc"] == pytest.approx(val_metrics["plcc"], abs=1e-5)
    # test: the report's predictions are the users' scores
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert report["protocol"] == CROPS.describe()
    assert report["predictions"] == pytest.approx(list(users[split["test"]]), abs=1e-5)
    # `bpclip evaluate` of the same checkpoint and dataset, same protocol
    code = main(
        [
            "evaluate", "--checkpoint", str(result.best_checkpoint), "--dataset", "csv", "--data", str(blur_csv),
            "--protocol", "crops", "--num-crops", "2", "--size", "64", "--report", str(tmp_path / "eval"),
        ]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["predictions"] == pytest.approx(list(users), abs=1e-5)
    assert printed["srcc"] == pytest.approx(quality_metrics(users, *dataset_targets(dataset))["srcc"], abs=1e-5)


def _layout(model: torch.nn.Module) -> dict:
    """Everything scoring could change in a model: tensors (values, strides, devices, grad flags),
    module types (a compiled attention block is another type) and train/eval flags."""
    tensors = {
        name: (t.detach().clone(), t.stride(), t.device, t.requires_grad)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    modules = [(name, type(m), m.training) for name, m in model.named_modules()]
    return {"tensors": tensors, "modules": modules}


def _same(a: dict, b: dict) -> bool:
    if a["modules"] != b["modules"] or a["tensors"].keys() != b["tensors"].keys():
        return False
    return all(torch.equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a["tensors"].values(), b["tensors"].values()))


def test_scoring_a_model_in_training_leaves_it_and_its_training_as_they_were(small_synthetic_csv, model_factory):
    model = model_factory("fr").train().to(memory_format=torch.channels_last)  # the trainer's CUDA layout
    model.backbone.set_batchnorm_training(True)  # a training BatchNorm, which folding must not touch
    untouched = copy.deepcopy(model)
    before = _layout(model)
    dataset = read_dataset("csv", str(small_synthetic_csv)).subset(list(range(6)))
    scores = [r.score for r in score_items(model, dataset, CROPS, batch_size=4)]
    assert all(s is not None for s in scores) and np.ptp(scores) > 0
    assert _same(_layout(model), before)
    # training goes on as if nothing had been scored
    generator = torch.Generator().manual_seed(3)
    batch = {
        "distorted": torch.rand(4, 3, 48, 48, generator=generator),
        "reference": torch.rand(4, 3, 48, 48, generator=generator),
        "target": torch.rand(4, generator=generator),
    }
    for net in (model, untouched):
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        torch.manual_seed(0)
        train_step(TensorOutputs(net), optimizer, batch, torch.device("cpu"))
    assert _same(_layout(model), _layout(untouched))


def test_the_rebuilds_level_check_scores_through_the_engine(model_factory, monkeypatch):
    calls: list[tuple[int, ...]] = []
    original = QualityEngine.predict

    def spy(self, images, *args, **kwargs):
        calls.append(tuple(images.shape))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(QualityEngine, "predict", spy)
    model = model_factory("nr")
    probes = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    assert dead_levels(model, probes, None, tolerance=1e-7) == []
    assert calls == [(4, 3, 64, 64)] * (1 + len(model.gated_pooling))  # the base scores, then one per level
    assert not model.training
