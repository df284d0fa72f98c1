"""A run that goes non-finite stops with a clear error, and nothing non-finite is ever written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bpclip_core.training import TrainingError, train, trainer
from bpclip_core.training.evaluation import quality_metrics
from bpclip_core.training.reports import write_report
from bpclip_core.training.trainer import RESUME_NAME, read_resume_state
from bpclip_core.weights.checkpoint import load_checkpoint, save_checkpoint

from .test_trainer import tiny_config


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_good_checkpoints(
    small_synthetic_csv, tmp_path, monkeypatch
):
    real_loss, calls = trainer.quality_loss, []

    def planted(predicted, target):  # NaN at the 6th step: 4 steps an epoch, so epoch 2, step 2
        calls.append(1)
        loss = real_loss(predicted, target)
        return loss * float("nan") if len(calls) == 6 else loss

    monkeypatch.setattr(trainer, "quality_loss", planted)
    out = tmp_path / "run"
    config = tiny_config(small_synthetic_csv, out, epochs=3, max_steps_per_epoch=4)
    with pytest.raises(TrainingError, match=r"loss is nan \(not finite\) at epoch 2, step 2.*lower lr"):
        train(config)
    model = load_checkpoint(out / "best.safetensors")  # epoch 1's, finite: it loads
    assert model.card.provenance["epochs"] == 1
    assert read_resume_state(out / RESUME_NAME)["epoch"] == 1
    lines = (out / "log.csv").read_text().splitlines()
    assert len(lines) == 2  # the header and epoch 1: no NaN epoch is logged, let alone marked best


def test_weights_that_went_non_finite_are_never_saved(small_synthetic_csv, tmp_path, monkeypatch):
    real_step = trainer.train_step

    def poisoning_step(model, optimizer, *args, **kwargs):
        result = real_step(model, optimizer, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("inf"))  # e.g. an Inf gradient with a finite loss
        return result

    monkeypatch.setattr(trainer, "train_step", poisoning_step)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"weight tensors .* hold NaN or Inf after epoch 1.*no checkpoint"):
        train(tiny_config(small_synthetic_csv, out, epochs=1, max_steps_per_epoch=1))
    assert not (out / "best.safetensors").exists() and not (out / RESUME_NAME).exists()


def test_save_checkpoint_refuses_non_finite_weights_and_keeps_the_old_file(nr_model, tmp_path):
    path = save_checkpoint(nr_model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with torch.no_grad():
        nr_model.regressor.parameters().__next__().fill_(float("nan"))
    with pytest.raises(ValueError, match=r"not writing .*m.safetensors: 1 of \d+ tensors hold NaN or Inf \(regressor"):
        save_checkpoint(nr_model, path)
    assert path.read_bytes() == before


def test_metrics_and_reports_survive_non_finite_predictions(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.random(20)
    predictions = targets + 0.05 * rng.random(20)
    predictions[[3, 7]] = [np.nan, np.inf]
    metrics = quality_metrics(predictions, targets)
    assert metrics["non_finite"] == 2 and metrics["count"] == 18 and metrics["srcc"] > 0.9
    broken = quality_metrics(np.full(20, np.nan), targets)
    assert broken["non_finite"] == 20 and np.isnan(broken["srcc"])
    folder = write_report(tmp_path / "report", "broken", broken, np.full(20, np.nan), targets)
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["srcc"] is None  # strict JSON
    assert "20 predictions were NaN or Inf" in (folder / "summary.md").read_text()
