import pytest
import torch

from bpclip_core import InputError
from bpclip_core.model.adjectives import QUALITY_ADJECTIVES
from bpclip_core.running.explain import explain
from bpclip_core.running.zero_shot import ZeroShotCLIPIQA


@pytest.fixture(scope="module")
def tiny_zero_shot():
    torch.manual_seed(0)
    return ZeroShotCLIPIQA.from_clip("bpclip-tiny-clip/random")


def test_score_is_the_good_adjectives_probability_mass(tiny_zero_shot, images):
    out = tiny_zero_shot(images)
    assert out.level_probabilities.shape == (2, 1, 40)
    good = torch.tensor([a.polarity > 0 for a in QUALITY_ADJECTIVES])
    assert torch.allclose(out.score, out.adjective_probabilities[:, good].sum(-1))
    assert bool(((out.score >= 0) & (out.score <= 1)).all())
    (first, _) = explain(out, tiny_zero_shot.adjectives, top_k=2)
    assert len(first.top_adjectives) == 2


def test_zero_shot_is_named_and_untrained(tiny_zero_shot):
    assert tiny_zero_shot.kind == "zero-shot CLIP"
    assert tiny_zero_shot.card.provenance["trained"] is False
    assert not any(p.requires_grad for p in tiny_zero_shot.parameters())


def test_zero_shot_rejects_references_and_bad_input(tiny_zero_shot, images):
    with pytest.raises(InputError, match="no-reference"):
        tiny_zero_shot(images, images)
    with pytest.raises(InputError, match="NaN"):
        tiny_zero_shot(torch.full((1, 3, 64, 64), float("nan")))


def test_default_rn50_zero_shot_from_planted_weights(planted_clip_rn50):
    model = ZeroShotCLIPIQA.from_clip("RN50/openai")
    assert model.image_size == 224 and model.text_model == "RN50/openai"
    assert torch.equal(model.image_tower.conv1.weight, planted_clip_rn50["visual.conv1.weight"])
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 100, 150))
    assert 0 <= float(out.score) <= 1
