import pytest

from bpclip_core.model.adjectives import (
    DIMENSIONS,
    PROMPT_TEMPLATE,
    QUALITY_ADJECTIVES,
    Adjective,
    adjectives_from_dicts,
    prompts,
)


def test_forty_unique_adjectives_in_six_dimensions_with_both_polarities():
    assert len(QUALITY_ADJECTIVES) == 40
    assert len({a.word for a in QUALITY_ADJECTIVES}) == 40
    assert {a.dimension for a in QUALITY_ADJECTIVES} == set(DIMENSIONS)
    assert len(DIMENSIONS) == 6
    for dim in DIMENSIONS:
        polarities = {a.polarity for a in QUALITY_ADJECTIVES if a.dimension == dim}
        assert polarities == {-1, 1}, dim


def test_prompts_follow_the_template():
    texts = prompts()
    assert texts[0] == PROMPT_TEMPLATE.format(QUALITY_ADJECTIVES[0].word)
    assert len(texts) == 40
    with pytest.raises(ValueError, match="must contain"):
        prompts(template="no placeholder")


def test_json_round_trip_and_bad_polarity():
    items = [a.to_dict() for a in QUALITY_ADJECTIVES]
    assert adjectives_from_dicts(items) == QUALITY_ADJECTIVES
    with pytest.raises(ValueError, match="polarity"):
        adjectives_from_dicts([{"word": "meh", "dimension": "overall quality", "polarity": 0}])
    assert Adjective("x", "y", 1).to_dict() == {"word": "x", "dimension": "y", "polarity": 1}
