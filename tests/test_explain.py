import pytest
import torch

from bpclip_core.model.adjectives import DIMENSIONS, QUALITY_ADJECTIVES
from bpclip_core.model.bpclip import QualityOutput
from bpclip_core.running.explain import dimension_goodness, explain


def _output():
    probs = torch.full((1, 4, 40), 1e-4)
    words = [a.word for a in QUALITY_ADJECTIVES]
    probs[0, :, words.index("blurry")] = 0.5
    probs[0, :, words.index("sharp")] = 0.1
    probs[0, :, words.index("vivid")] = 0.3
    probs = probs / probs.sum(-1, keepdim=True)
    return QualityOutput(torch.tensor([0.25]), probs)


def test_explanation_has_top_k_levels_and_dimensions():
    (exp,) = explain(_output(), QUALITY_ADJECTIVES, top_k=3)
    # "sharp" is the third most probable word but sharpness is bad (blurry): never both
    named = [w for w, _ in exp.top_adjectives]
    assert named[:2] == ["blurry", "vivid"] and "sharp" not in named and len(named) == 3
    assert exp.top_adjectives[0][1] > exp.top_adjectives[1][1] > exp.top_adjectives[2][1]
    assert list(exp.dimensions) == list(DIMENSIONS)
    sharpness = exp.dimensions["sharpness"]
    assert sharpness.dominant == "blurry"
    assert sharpness.goodness == pytest.approx(0.1 / 0.6, rel=0.01)
    assert exp.dimensions["colorfulness"].dominant == "vivid"
    assert len(exp.level_probabilities) == 4
    assert sum(exp.adjective_probabilities.values()) == pytest.approx(1.0, rel=1e-5)
    assert exp.to_dict()["top_adjectives"][0]["adjective"] == "blurry"
    assert exp.score == pytest.approx(0.25)


def test_goodness_in_unit_interval_and_top_k_checked(nr_model, images):
    out = nr_model(images)
    goodness = dimension_goodness(out.adjective_probabilities, QUALITY_ADJECTIVES)
    assert all(((g >= 0) & (g <= 1)).all() for g in goodness.values())
    with pytest.raises(ValueError, match="top_k"):
        explain(out, QUALITY_ADJECTIVES, top_k=0)
