"""The pipeline learns: a tiny model trained from random initialisation on synthetic
distortions of bundled images ranks distortion levels on reference content it never saw.

The issue's goal is SRCC >= 0.85 on held-out content; the test asserts >= 0.75 (an untrained
model is at 0), because 40 held-out pairs make the figure swing between machines: the same
seed and code gave 0.911 on one 2-core machine and 0.798 on another (2026-12-03, issue 30;
lr 1e-3 gave 0.862 there). Measured for exactly this recipe
(20 scikit-image pictures at 128 px, 6:2:2 by reference, 40 held-out pairs of 4 unseen
references, whole-image evaluation, AdamW weight decay 0.05): test SRCC 0.911 with seed 0
(the test's), 0.851 and 0.890 with seed and split seed 1 and 2. Earlier recipes were less
robust: 14 pictures at 80 px, 0.885 / 0.724 (seeds 0 / 1); 14 at 128 px, 0.855 / 0.910 /
0.795; 20 at 128 px with the paper's weight decay 1e-5, 0.870 / 0.830 / 0.951 (lr 1.5e-3)
and 0.842 / 0.824 / 0.865 (lr 3e-3). These use the ``gelu-mlp`` activations, which the test
pins: with the figures' activations (Fig. 2/3, the default since) the same recipe reaches
test SRCC 0.79 and a final loss of 0.036 (seed 0): they learn slower at this scale."""

import pytest

from bpclip_core.data.synthetic import synthesize_dataset
from bpclip_core.training import TrainConfig, train

from .conftest import write_pristine

NAMES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
    "retina", "hubble_deep_field", "coins", "moon", "brick", "grass", "gravel",
    "clock", "cell", "stereo_motorcycle", "microaneurysms", "text", "page",
)  # fmt: skip


@pytest.mark.slow
def test_tiny_model_learns_distortion_levels_on_unseen_content(tmp_path):
    pristine = write_pristine(tmp_path / "pristine", 144, NAMES)
    distortions = ["gaussian_blur", "gaussian_noise"]
    csv = synthesize_dataset(pristine, tmp_path / "synthetic", distortions=distortions, size=128)
    config = TrainConfig(
        dataset="csv", dataset_root=str(csv), model="tiny", mode="fr", pretrained=False,
        # a 32-d CLIP space saturates CLIP's 0.01; the activations this recipe was measured with
        model_overrides={"similarity_temperature": 0.1, "activations": "gelu-mlp"},
        epochs=40, batch_size=16, patch_size=64, lr=1.5e-3, weight_decay=0.05, t_max=40,
        cache_images=True, progress=False, eval_protocol="full",
        out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    result = train(config)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 4
    assert result.test_metrics is not None and result.test_metrics["count"] >= 40
    assert result.test_metrics["srcc"] >= 0.75, result.test_metrics
