"""The bundled default models judge quality out of the box: rankings on held-out pictures.

astronaut, coffee, chelsea and rocket are always held out of the bundled models' training
content (bpclip_core/data/content.py), so these are pictures the models never saw. The tests
assert rankings, not exact numbers: a distorted version scores below its original, a
stronger level below a milder one, and the dimension a distortion harms is the lowest.

What the NR model does less well is not asserted, and is stated in docs/default-models.md: on
the other held-out pictures (artwork, procedural ones) its score falls less reliably with blur,
codecs and pixelation than with noise, exposure and contrast damage.
"""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpclip_core.data.synthetic import distort
from bpclip_core.running.engine import QualityEngine
from bpclip_core.running.explain import explain
from bpclip_core.weights.checkpoint import load_checkpoint

EXAMPLES = ("astronaut", "coffee", "chelsea", "rocket")
SIZE = 224  # the bundled models' image size


def _picture(name: str) -> np.ndarray:
    from skimage import data

    image = Image.fromarray(getattr(data, name)()[..., :3])
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return {name: _picture(name) for name in EXAMPLES}


# what each bundled model ranks and explains on these photographs (benchmarks/RESULTS.md has every type)
RANKED = {
    "fr": ("gaussian_blur", "jpeg", "gaussian_noise", "darken", "pixelate"),
    "nr": ("gaussian_blur", "jpeg", "gaussian_noise", "haze", "pixelate"),
}
EXPLAINED = {
    "fr": ("gaussian_blur", "gaussian_noise", "darken", "contrast_decrease", "desaturate"),
    "nr": ("gaussian_blur", "gaussian_noise", "brighten", "contrast_decrease"),
}
DIMENSION = {
    "gaussian_blur": "sharpness", "gaussian_noise": "noisiness", "darken": "brightness", "brighten": "brightness",
    "contrast_decrease": "contrast", "desaturate": "colorfulness",
}  # fmt: skip


def _output(model, distorted: list[np.ndarray], references: list[np.ndarray]):
    with torch.inference_mode():
        return model(_tensor(distorted), _tensor(references) if model.mode == "fr" else None)


@pytest.mark.parametrize(("mode", "distortion"), [(mode, name) for mode, names in RANKED.items() for name in names])
def test_distorted_versions_score_below_their_originals(pictures, mode, distortion):
    bundled = load_checkpoint(mode=mode)
    originals = list(pictures.values())
    mild = [distort(p, distortion, 2, seed=i) for i, p in enumerate(originals)]
    strong = [distort(p, distortion, 5, seed=i) for i, p in enumerate(originals)]
    clean = _output(bundled, originals, originals).score
    scores_mild = _output(bundled, mild, originals).score
    scores_strong = _output(bundled, strong, originals).score
    assert (scores_strong < clean).all(), (distortion, clean, scores_strong)
    assert (scores_strong < scores_mild).float().mean() >= 0.75, (distortion, scores_mild, scores_strong)
    assert ((clean >= 0) & (clean <= 1)).all()


@pytest.mark.parametrize(("mode", "distortion"), [(mode, name) for mode, names in EXPLAINED.items() for name in names])
def test_the_harmed_dimension_is_the_lowest(pictures, mode, distortion):
    bundled, dimension = load_checkpoint(mode=mode), DIMENSION[distortion]
    originals = list(pictures.values())
    severe = [distort(p, distortion, 4, seed=i) for i, p in enumerate(originals)]
    explanations = explain(_output(bundled, severe, originals), bundled.card.adjectives)
    lowest = [min((d for d in e.dimensions if d != "overall quality"), key=lambda d: e.dimensions[d].goodness)
              for e in explanations]  # fmt: skip
    assert lowest.count(dimension) >= 3, (distortion, lowest)


def test_the_engine_scores_files_with_no_checkpoint_argument(tmp_path, pictures):
    path = tmp_path / "coffee.png"
    Image.fromarray((pictures["coffee"] * 255).astype(np.uint8)).save(path)
    noisy = tmp_path / "coffee_noisy.png"
    Image.fromarray((distort(pictures["coffee"], "gaussian_noise", 4) * 255).astype(np.uint8)).save(noisy)
    engine = QualityEngine.from_checkpoint(None)
    assert "bundled default model" in engine.description
    results = {Path(r.path).name: r for r in engine.score([path, noisy])}
    assert results["coffee_noisy.png"].score < results["coffee.png"].score
    assert any(word in ("noisy", "grainy", "speckled") for word, _ in results["coffee_noisy.png"].top_adjectives)


def test_the_command_scores_with_no_checkpoint_argument(tmp_path, pictures, capsys):
    from bpclip_core.cli import main

    noisy = distort(pictures["rocket"], "gaussian_noise", 5)
    for name, image in (("rocket.png", pictures["rocket"]), ("rocket_noisy.png", noisy)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / name)
    assert main(["score", str(tmp_path), "--no-progress", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "bpclip-nr: bundled default model" in captured.err and "UNTRAINED" not in captured.err
    rows = {Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(captured.out))}
    assert float(rows["rocket_noisy.png"]["score"]) < float(rows["rocket.png"]["score"])


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_the_bundled_models_score_under_float16_autocast(pictures, mode):
    """Their feature scale is fitted to float16 at export (feature_scale.py): before that, every
    score of the FR model was NaN under fp16 autocast, the default on GPUs without bf16."""
    from bpclip_core.model.feature_scale import FP16_SAFE_PEAK, peak_activation, probe_images

    model = load_checkpoint(mode=mode)
    originals = [pictures[name] for name in EXAMPLES]
    distorted = [distort(image, "gaussian_blur", 3) for image in originals]
    assert peak_activation(model, probe_images(list(_tensor(originals)))) <= FP16_SAFE_PEAK
    full = _output(model, distorted, originals).score
    with torch.autocast("cpu", dtype=torch.float16):
        half = _output(model, distorted, originals).score
    assert torch.isfinite(half).all()
    assert torch.allclose(half, full, atol=0.01)


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_every_level_of_the_bundled_models_changes_their_scores(pictures, mode):
    """A saturated gate (the first bundled NR model's F_5) cannot ship again: scaling any one
    level's pooled map moves the scores of real pictures."""
    from bpclip_core.training.default_models import dead_levels

    model = load_checkpoint(mode=mode)
    originals = [torch.from_numpy(pictures[name]).permute(2, 0, 1).contiguous() for name in EXAMPLES]
    if mode == "nr":
        assert dead_levels(model, originals, None) == []
    else:
        blurred = [torch.from_numpy(distort(pictures[name], "gaussian_blur", 3)).permute(2, 0, 1) for name in EXAMPLES]
        assert dead_levels(model, blurred, originals) == []
