"""Our reading of the paper's "cosine annealing, T_max = 50, 200 epochs" (issue 13.3)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bpclip_core.training import TrainConfig, train
from bpclip_core.training.trainer import CosineRestarts, build_scheduler


def test_each_restart_cycle_runs_from_the_peak_down_to_the_floor():
    factor = CosineRestarts(cycle_steps=10, floor=0.0)
    cycle = [factor(step) for step in range(10)]
    assert cycle[0] == 1.0 and cycle[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(cycle))
    assert [factor(step) for step in range(10, 20)] == cycle  # the next cycle restarts at the peak


def _lrs(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    seen = []
    for _ in range(config.epochs):
        for _ in range(steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if config.schedule == "restarts":
                scheduler.step()
        if config.schedule == "cosine-epoch":
            scheduler.step()
    return seen


def test_the_papers_200_epochs_end_at_the_minimum_with_restarts_not_at_the_peak():
    paper = TrainConfig(epochs=200, t_max=50, lr=1.0)
    restarts = _lrs(paper, steps_per_epoch=5)
    assert restarts[-1] == pytest.approx(0.0, abs=1e-9)  # the kept (last-epoch) model trains at the minimum
    assert [restarts[50 * 5 * k] for k in range(4)] == [1.0] * 4  # four cycles of 50 epochs
    old = _lrs(paper.replace(schedule="cosine-epoch"), steps_per_epoch=5)
    assert old[-1] > 0.99  # torch's CosineAnnealingLR per epoch climbs back to the peak by epoch 200
    whole = _lrs(TrainConfig(epochs=6, t_max=0, lr=1.0), steps_per_epoch=4)
    assert whole[0] == 1.0 and whole[-1] == pytest.approx(0.0, abs=1e-9) and whole[12] == pytest.approx(0.5, abs=0.07)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_a_run_records_its_epoch_start_learning_rates(small_synthetic_csv, tmp_path):
    from .test_trainer import tiny_config

    result = train(tiny_config(small_synthetic_csv, tmp_path / "run", epochs=3, t_max=0, max_steps_per_epoch=2))
    expected = [0.5 * (1 + math.cos(math.pi * step / 5)) * 1e-3 for step in (0, 2, 4)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected)
