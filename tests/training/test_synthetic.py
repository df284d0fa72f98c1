import csv

import numpy as np
import pytest

from bpclip_core.data import read_csv_dataset
from bpclip_core.data.synthetic import DISTORTIONS, LEVELS, distort, pseudo_mos, synthesize_dataset


@pytest.fixture(scope="module")
def pristine_array(pristine_dir):
    from PIL import Image

    return np.asarray(Image.open(pristine_dir / "astronaut.png").convert("RGB"), dtype=np.float32) / 255


def test_at_least_twenty_types_in_seven_families():
    families = {family for family, _ in DISTORTIONS.values()}
    assert len(DISTORTIONS) >= 20
    assert families == {"blur", "noise", "compression", "colour", "brightness_contrast", "spatial", "sharpness"}


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_every_distortion_changes_the_image_more_at_higher_levels(name, pristine_array):
    changes = []
    for level in range(1, LEVELS + 1):
        out = distort(pristine_array, name, level, seed=3)
        assert out.shape == pristine_array.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        changes.append(float(np.abs(out - pristine_array).mean()))
    assert changes[0] > 0, f"{name} level 1 leaves the image unchanged"
    assert changes[-1] > changes[0], f"{name}: level 5 is no stronger than level 1: {changes}"


def test_distortions_are_deterministic_per_seed(pristine_array):
    a = distort(pristine_array, "gaussian_noise", 3, seed=1)
    assert np.array_equal(a, distort(pristine_array, "gaussian_noise", 3, seed=1))
    assert not np.array_equal(a, distort(pristine_array, "gaussian_noise", 3, seed=2))


def test_pseudo_mos_is_monotone_and_within_one_to_five():
    values = [pseudo_mos(level) for level in range(1, LEVELS + 1)]
    assert values == sorted(values, reverse=True)
    assert min(values) >= 1 and max(values) <= 5
    with pytest.raises(ValueError):
        pseudo_mos(0)


def test_synthesized_dataset_is_a_readable_fr_csv(small_synthetic_csv):
    with small_synthetic_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * 2 * 5
    assert set(rows[0]) == {"image", "mos", "ref", "distortion", "level"}
    dataset = read_csv_dataset(small_synthetic_csv)
    assert dataset.mode == "fr" and len(dataset) == 80
    assert len({item.content for item in dataset.items}) == 8
    assert dataset.score_scale.mos_min == 1.0 and dataset.score_scale.mos_max == pytest.approx(4.2)


def test_unknown_distortion_and_empty_folder_are_errors(tmp_path, pristine_dir):
    with pytest.raises(ValueError, match="unknown distortion"):
        synthesize_dataset(pristine_dir, tmp_path / "out", ["no_such_thing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pristine images"):
        synthesize_dataset(tmp_path / "empty", tmp_path / "out")
