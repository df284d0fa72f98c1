"""The pipeline learns: a tiny model trained from random initialisation on synthetic
distortions of bundled images ranks distortion levels on reference content it never saw.

The recipe: 20 scikit-image pictures at 128 px, Gaussian blur and noise at five levels, split
8:0:2 by reference (NR's split rule: no validation part, the last epoch is the model kept;
split seed 0 holds out coins, brick, microaneurysms and immunohistochemistry: 40 pairs), 40
epochs, AdamW weight decay 0.05, whole-image evaluation, on the CPU with one thread and
torch's deterministic algorithms, so that a run repeats to the last digit on a machine.

Why (issue 30 item 5). The figure is chaotic in the float rounding: with the same seed, 2
threads instead of 1 train another model (after 3 epochs, test SRCC 0.812 against 0.769), and
other CPUs round otherwise still, so what holds on every machine is what holds over seeds.
The earlier recipe (6:2:2, the model kept by its SRCC on 4 validation references, the
machine's thread count) gave 0.911 on one machine and 0.798 on another with the same seed;
at one thread, seeds 0-9 gave 0.734 0.786 0.741 0.876 0.712 0.887 0.796 0.655 0.816 0.755
(4 of 10 below its bar of 0.75, and 3 of 10 missed its loss bar of a quarter), the noisy
validation figure often keeping an early epoch (epoch 2 for seed 0). Without a validation
part the training gets those 4 references too, and the kept model is the one annealed to the
end; the test references stay the same.

Measured for exactly this recipe, seeds 0-9 (``.venv/bin/python -m
tests.training.test_learning 0 1 2 3 4 5 6 7 8 9``; 2026-12-06, 2-core x86_64, torch 2.14.1,
about 3.5 minutes a seed): test SRCC 0.925 0.907 0.940 0.951 0.913 0.810 0.893 0.891 0.887
0.885 (minimum 0.810, median 0.900: the issue's goal of 0.85 met by 9 of 10); the last
epoch's loss over the first's 0.18 0.19 0.17 0.14 0.24 0.44 0.23 0.18 0.30 0.32. The test
(seed 0) asserts SRCC >= 0.75, 0.06 below the worst seed, and a loss below 0.6 of its start.
A model that does not learn is far below both. Untrained (the run's starting model, its
BatchNorm statistics measured; ``... test_learning --untrained 0 1 ... 9``): SRCC -0.427
0.123 -0.072 0.104 0.376 -0.441 -0.260 0.170 -0.243 0.342 (at most 0.44 either way: a random
FR network's feature differences grow with the level, with a random sign). Trained on the
training references' labels shuffled among them (measured once, seeds 0 and 1): SRCC 0.218
and 0.054, the loss ending at 0.99 and 0.91 of its start.

The test pins the ``gelu-mlp`` activations: with the figures' activations (Fig. 2/3, the
default since) the earlier recipe reached test SRCC 0.79 and a final loss of 0.036 (seed 0):
they learn slower at this scale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bpclip_core.data.synthetic import synthesize_dataset
from bpclip_core.training import TrainConfig, TrainResult, train

from .conftest import write_pristine

NAMES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
    "retina", "hubble_deep_field", "coins", "moon", "brick", "grass", "gravel",
    "clock", "cell", "stereo_motorcycle", "microaneurysms", "text", "page",
)  # fmt: skip


def learning_run(folder: Path, seed: int = 0, **changes: Any) -> TrainResult:
    """The test's recipe in ``folder`` with ``seed`` (and any ``TrainConfig`` field changed),
    on one CPU thread with deterministic algorithms; the process's settings are restored after."""
    pristine = write_pristine(folder / "pristine", 144, NAMES)
    csv = synthesize_dataset(pristine, folder / "synthetic", ["gaussian_blur", "gaussian_noise"], size=128)
    config = TrainConfig(**{
        "dataset": "csv", "dataset_root": str(csv), "model": "tiny", "mode": "fr", "pretrained": False,
        # a 32-d CLIP space saturates CLIP's 0.01; the activations this recipe was measured with
        "model_overrides": {"similarity_temperature": 0.1, "activations": "gelu-mlp"},
        "epochs": 40, "batch_size": 16, "patch_size": 64, "lr": 1.5e-3, "weight_decay": 0.05, "t_max": 40,
        "split_ratios": [0.8, 0.0, 0.2], "seed": seed, "split_seed": 0, "device": "cpu",
        "cache_images": True, "progress": False, "eval_protocol": "full", "out_dir": str(folder / "run"),
        **changes,
    })  # fmt: skip
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # the thread count changes the float rounding, and so the model
    torch.use_deterministic_algorithms(True)
    try:
        return train(config)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_model_learns_distortion_levels_on_unseen_content(tmp_path):
    result = learning_run(tmp_path, seed=0)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 0.6, result.history
    assert result.test_metrics is not None and result.test_metrics["count"] == 40
    assert result.test_metrics["srcc"] >= 0.75, result.test_metrics


if __name__ == "__main__":  # the docstring's figures: python -m tests.training.test_learning [--untrained] SEED...
    import json
    import tempfile

    untrained = "--untrained" in sys.argv[1:]
    # untrained: one step at lr ~0 scores the starting model (its BatchNorm statistics measured)
    changes = {"epochs": 1, "t_max": 1, "lr": 1e-12, "max_steps_per_epoch": 1} if untrained else {}
    for seed in [int(arg) for arg in sys.argv[1:] if arg != "--untrained"] or [0]:
        with tempfile.TemporaryDirectory() as folder:
            run = learning_run(Path(folder), seed, **changes)
            loss = run.history[-1]["train_loss"] / run.history[0]["train_loss"]
            metrics = run.test_metrics or {}
            print(json.dumps({"seed": seed, "srcc": metrics.get("srcc"), "loss_ratio": loss}), flush=True)
