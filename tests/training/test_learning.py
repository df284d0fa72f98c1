"""The pipeline learns: a tiny model trained from random initialisation on synthetic
distortions of bundled images ranks distortion levels on reference content it never saw.

What is asserted is a margin measured over ten runs, not one run's figure: 40 held-out pairs
make the figure swing with the seed, the thread count and the machine (seed 0 gave 0.911 on
one 2-core machine and 0.798 on another, 2026-12-03; 0.734 with one thread, 2026-12-06), so
a bar near one run's value (0.85, then 0.75) failed on some clean clones (issue 30).
Measured 2026-12-06 for exactly this recipe (seeds 0-9, split seed 0, one thread each):
test SRCC 0.734 0.786 0.741 0.876 0.712 0.887 0.796 0.655 0.816 0.755 (lowest 0.655, median
0.79), and first-epoch over last-epoch training loss 3.28 4.08 4.74 7.37 5.27 5.50 5.62 3.59
7.39 2.92 (lowest 2.92). The model the runs start from (one step at lr 1e-12, same seeds)
scores SRCC between -0.48 and 0.35 and its loss does not fall. So the test asserts SRCC >=
0.5 and a loss at least halved: both below every trained run and above every untrained one.
The issue's goal (SRCC >= 0.85 on held-out content) is a property of a real training run,
measured by ``bpclip train``'s report, not of this small test. These runs use the
``gelu-mlp`` activations, which the test pins: with the figures' activations (Fig. 2/3, the
default since) the same recipe reaches
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
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 2  # lowest of 10 seeds: / 2.92
    assert result.test_metrics is not None and result.test_metrics["count"] >= 40
    assert result.test_metrics["srcc"] >= 0.5, result.test_metrics  # trained 0.655-0.887, untrained <= 0.35
