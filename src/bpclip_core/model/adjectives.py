"""The 40 quality adjectives, their six dimensions and polarity, and the prompt template.

The paper (Sec. III-C) compares image features with the CLIP text embeddings of 40
quality adjectives but does not list them. Our reading follows CLIP-IQA's six quality
attributes. Each adjective carries a polarity (``+1`` good, ``-1`` bad) so the same
list serves zero-shot scoring and explanations. This table is the only place the
adjectives are defined; checkpoints store a copy so a model always travels with the
vocabulary it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROMPT_TEMPLATE = "a {} photo."

DIMENSIONS: tuple[str, ...] = (
    "overall quality",
    "brightness",
    "noisiness",
    "colorfulness",
    "sharpness",
    "contrast",
)


def goodness_column(dimension: str) -> str:
    """One dimension's goodness column (CLI CSV, Ray): ``overall quality`` -> ``overall_quality_goodness``."""
    return f"{dimension.replace(' ', '_')}_goodness"


@dataclass(frozen=True)
class Adjective:
    """One quality adjective: its word, the quality dimension it describes and its polarity."""

    word: str
    dimension: str
    polarity: int  # +1 describes good quality, -1 bad quality

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)


def _dimension(name: str, good: tuple[str, ...], bad: tuple[str, ...]) -> list[Adjective]:
    return [Adjective(w, name, +1) for w in good] + [Adjective(w, name, -1) for w in bad]


QUALITY_ADJECTIVES: tuple[Adjective, ...] = tuple(
    _dimension(
        "overall quality",
        ("excellent", "high-quality", "good", "fine"),
        ("bad", "low-quality", "poor", "distorted"),
    )
    + _dimension("brightness", ("bright", "well-lit", "well-exposed"), ("dark", "underexposed", "overexposed"))
    + _dimension("noisiness", ("clean", "noise-free", "smooth"), ("noisy", "grainy", "speckled"))
    + _dimension("colorfulness", ("colorful", "vivid", "vibrant"), ("colorless", "dull", "washed-out"))
    + _dimension(
        "sharpness",
        ("sharp", "crisp", "detailed", "in-focus"),
        ("blurry", "out-of-focus", "pixelated", "blocky"),
    )
    + _dimension("contrast", ("high-contrast", "well-contrasted", "striking"), ("low-contrast", "flat", "hazy"))
)


def prompts(adjectives: tuple[Adjective, ...] = QUALITY_ADJECTIVES, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The text prompts fed to CLIP's text tower, one per adjective."""
    if "{}" not in template:
        raise ValueError(f"prompt template must contain '{{}}' for the adjective, got {template!r}")
    return [template.format(a.word) for a in adjectives]


def adjectives_from_dicts(items: list[dict]) -> tuple[Adjective, ...]:
    """Rebuild an adjective table from its JSON form (as stored in checkpoints)."""
    table = tuple(Adjective(str(i["word"]), str(i["dimension"]), int(i["polarity"])) for i in items)
    for a in table:
        if a.polarity not in (-1, 1):
            raise ValueError(f"adjective {a.word!r} has polarity {a.polarity}; expected +1 or -1")
    return table
