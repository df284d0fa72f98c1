"""Full-reference pairing: by relative path first; an ambiguous or missing partner is that input's error."""

from __future__ import annotations

import shutil

import pytest

from bpclip_core import InputError
from bpclip_core.running.engine import QualityEngine


@pytest.fixture
def fr_engine(fr_model):
    return QualityEngine(fr_model, attention="eager", num_workers=0)


def _tree(root, write, files):
    for rel, seed in files.items():
        write(root / rel, seed)
    return root


@pytest.fixture
def write_image():
    import numpy as np
    from PIL import Image

    def write(path, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)

    return write


def test_same_name_in_two_subfolders_pairs_by_relative_path(fr_engine, tmp_path, write_image):
    dist = _tree(tmp_path / "dist", write_image, {"a/img.png": 1, "b/img.png": 2})
    ref = _tree(tmp_path / "ref", write_image, {"a/img.png": 3, "b/img.png": 4})
    a, b = fr_engine.score(dist, ref)
    assert a.reference.endswith("ref/a/img.png") and b.reference.endswith("ref/b/img.png")
    shutil.rmtree(ref / "b")  # b/img.png has no partner now: never the one in a/
    a, b = fr_engine.score(dist, ref)
    assert a.error is None and b.score is None and b.reference is None
    assert "another subfolder" in b.error and "ref/a/img.png" in b.error


def test_flat_references_serve_every_subfolder_and_ambiguity_is_an_error(fr_engine, tmp_path, write_image):
    dist = _tree(tmp_path / "dist", write_image, {"blur/img.png": 1, "noise/img.jpg": 2, "top.png": 5})
    ref = _tree(tmp_path / "ref", write_image, {"img.png": 3, "x/top.png": 6, "y/top.png": 7})
    blur, noise, top = fr_engine.score(dist, ref)
    assert blur.reference.endswith("ref/img.png") and noise.reference.endswith("ref/img.png")
    assert top.score is None and "ambiguous reference: 2 references" in top.error


def test_no_reference_matching_any_input_says_so(fr_engine, tmp_path, write_image):
    dist = _tree(tmp_path / "dist", write_image, {"one.png": 1, "two.png": 2})
    ref = _tree(tmp_path / "ref", write_image, {"other.png": 3})
    with pytest.raises(InputError, match="no reference in .*ref matches any of the 2 images"):
        fr_engine.score(dist, ref)
