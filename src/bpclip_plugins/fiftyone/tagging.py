"""How a quality run marks samples: its brain-run method name, its tags and its quality bands.

Pure functions of scores and names (no FiftyOne import): the run logic in
:mod:`bpclip_plugins.fiftyone`, the run records in :mod:`.runs` and the App's operators all
read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RUN_METHOD = "bpclip"
ERROR_TAG = "bpclip:error"
QUALITY_TAG_PREFIX = "quality:"
ADJECTIVE_TAG_PREFIX = "adjective:"
BANDS = ("none", "thresholds", "quantiles")
# default cut points: on the normalised score (the card's MOS scale mapped to [0, 1], 1 = best),
# below the scale's middle is "low" and its top quarter "high"; quantile bands cut in thirds
DEFAULT_CUT_POINTS = {"thresholds": (0.5, 0.75), "quantiles": (1 / 3, 2 / 3), "none": (0.5, 0.75)}


@dataclass(frozen=True)
class QualityTagging:
    """How samples are tagged after scoring.

    Attributes:
        bands: ``thresholds`` (absolute bands, the default: cut the normalised score, the
            model's calibrated scale, at ``cut_points``), ``quantiles`` (cut at those quantiles
            of the view's scores) or ``none``.
        cut_points: increasing cut points, one fewer than ``labels``; None: the bands' default
            (:data:`DEFAULT_CUT_POINTS`: 0.5 and 0.75 on the score, thirds for quantiles).
        labels: band names, worst first; tags read ``quality:<label>``.
        tag_adjectives: tag each sample with its dominant adjective (``adjective:<word>``).
    """

    bands: str = "thresholds"
    cut_points: tuple[float, ...] | None = None
    labels: tuple[str, ...] = ("low", "medium", "high")
    tag_adjectives: bool = True

    def __post_init__(self) -> None:
        if self.bands not in BANDS:
            raise ValueError(f"bands must be one of {BANDS}, got {self.bands!r}")
        if self.cut_points is None:  # frozen: set once, here
            object.__setattr__(self, "cut_points", DEFAULT_CUT_POINTS[self.bands])
        if len(self.labels) != len(self.cut_points) + 1:
            raise ValueError(f"{len(self.cut_points)} cut points need {len(self.cut_points) + 1} labels")
        if list(self.cut_points) != sorted(self.cut_points):
            raise ValueError(f"cut points must increase: {self.cut_points}")
        if self.bands == "quantiles" and not all(0 < q < 1 for q in self.cut_points):
            raise ValueError(f"quantile cut points must lie in (0, 1): {self.cut_points}")


def band_labels(scores: list[float], tagging: QualityTagging) -> list[str | None]:
    """The band label of each score (None where there is no score or no banding)."""
    valid = np.array([s for s in scores if s is not None], dtype=float)
    if tagging.bands == "none" or valid.size == 0:
        return [None] * len(scores)
    cuts = np.quantile(valid, tagging.cut_points) if tagging.bands == "quantiles" else np.array(tagging.cut_points)
    return [None if s is None else tagging.labels[int(np.searchsorted(cuts, s, side="right"))] for s in scores]


TIE_TOLERANCE = 1e-6  # quantile bands need scores that differ by more than this


def bands_are_meaningful(scores: list[float | None], tagging: QualityTagging) -> bool:
    """False for quantile bands over scores that all tie (within ``TIE_TOLERANCE``)."""
    valid = [s for s in scores if s is not None]
    return tagging.bands != "quantiles" or (len(valid) > 1 and max(valid) - min(valid) > TIE_TOLERANCE)


def bands_on_scale(tagging: QualityTagging, scale: Any) -> str:
    """How the bands cut, for the run's record and summary: absolute cut points are also given
    on the model card's MOS scale (``scale``: a :class:`bpclip_core.model.config.ScoreScale`)."""
    if tagging.bands == "none":
        return "no quality bands"
    cuts = ", ".join(f"{c:g}" for c in tagging.cut_points)
    if tagging.bands == "quantiles":
        return f"quantile bands {tagging.labels} at quantiles {cuts} of the run's scores"
    mos = ", ".join(f"{float(scale.to_mos(c)):.3g}" for c in tagging.cut_points)
    return (
        f"absolute bands {tagging.labels} at scores {cuts} (MOS {mos} on the model's "
        f"{scale.mos_min:g}-{scale.mos_max:g} scale)"
    )


def default_tag_prefix(score_field: str) -> str:
    """The tag prefix of a run: none for the default score field, else ``<score_field>/``."""
    return "" if score_field == "bpclip_score" else f"{score_field}/"


def run_tags(prefix: str) -> tuple[str, str, str]:
    """(quality band tag prefix, adjective tag prefix, error tag) of a run with ``prefix``."""
    return prefix + QUALITY_TAG_PREFIX, prefix + ADJECTIVE_TAG_PREFIX, prefix + ERROR_TAG


def owned_tags(tags: list[str], prefix: str) -> list[str]:
    """The tags among ``tags`` that a run with ``prefix`` wrote."""
    quality, adjective, error = run_tags(prefix)
    return [t for t in tags if t.startswith((quality, adjective)) or t == error]
