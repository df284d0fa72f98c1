"""Quality datasets as data: a list of (image, MOS, reference) items plus how to read the MOS.

Every reader in :mod:`bpclip_core.data.readers` returns a :class:`QualityDataset`; splits,
training and evaluation only ever see this form.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bpclip_core.errors import BPCLIPError
from bpclip_core.model.config import Mode, ScoreScale


class DatasetError(BPCLIPError, ValueError):
    """An annotation file is missing or malformed, or names images that do not exist."""


@dataclass(frozen=True)
class QualityItem:
    """One rated image.

    Attributes:
        image: the (distorted) image file.
        mos: its mean opinion score (or DMOS) on the dataset's own scale.
        reference: the pristine reference image (full-reference datasets), else None.
        content: the group key of content-disjoint splits: the reference's name for FR
            datasets, the image's own name for NR datasets.
        distortion: the distortion type where the dataset records it (synthetic data), else "".
    """

    image: Path
    mos: float
    reference: Path | None = None
    content: str = ""
    distortion: str = ""


@dataclass
class QualityDataset:
    """A rated image collection read from one of the supported layouts.

    Attributes:
        name: the dataset's name (recorded in split files and reports).
        items: the rated images, in a deterministic order.
        score_scale: how MOS maps to normalised quality in [0, 1] (eq. 10).
        root: the folder the dataset was read from.
    """

    name: str
    items: list[QualityItem]
    score_scale: ScoreScale = field(default_factory=ScoreScale)
    root: Path = Path(".")

    @property
    def mode(self) -> Mode:
        """``"fr"`` when every item has a reference, else ``"nr"``."""
        return "fr" if self.items and all(item.reference is not None for item in self.items) else "nr"

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        """A short hash of the item list (file names and MOS): split files check it on load."""
        digest = hashlib.sha256()
        for item in self.items:
            ref = item.reference.name if item.reference else ""
            digest.update(f"{item.image.name}|{ref}|{item.mos:.6g}\n".encode())
        return digest.hexdigest()[:16]

    def subset(self, indices: list[int], name: str | None = None) -> QualityDataset:
        """A dataset of the items at ``indices`` (same score scale)."""
        return QualityDataset(name or self.name, [self.items[i] for i in indices], self.score_scale, self.root)


def build_dataset(
    name: str,
    items: list[QualityItem],
    root: Path,
    higher_is_better: bool = True,
    check_files: bool = True,
    source: str = "annotations",
) -> QualityDataset:
    """Validate ``items`` and wrap them in a :class:`QualityDataset` whose scale spans their MOS.

    Raises:
        DatasetError: no items, non-finite MOS, duplicate entries, all-equal MOS, or
            (with ``check_files``) image files named in ``source`` that do not exist.
    """
    if not items:
        raise DatasetError(f"{name}: {source} list no images")
    bad = [item for item in items if not math.isfinite(item.mos)]
    if bad:
        raise DatasetError(f"{name}: {source} has non-finite MOS for {bad[0].image.name} (and {len(bad) - 1} more)")
    counts = Counter((item.image, item.reference) for item in items)
    duplicates = [key for key, n in counts.items() if n > 1]
    if duplicates:
        image, reference = duplicates[0]
        pair = f"{image.name}" + (f" (reference {reference.name})" if reference else "")
        raise DatasetError(
            f"{name}: {source} lists {pair} {counts[duplicates[0]]} times "
            f"({len(duplicates)} duplicated entries in all); each image may appear once"
        )
    if check_files:
        missing = sorted({str(p) for item in items for p in (item.image, item.reference) if p and not p.is_file()})
        if missing:
            shown = ", ".join(missing[:3])
            raise DatasetError(
                f"{name}: {len(missing)} image file(s) named in {source} do not exist, e.g. {shown}; "
                f"check the dataset root ({root})"
            )
    low, high = min(item.mos for item in items), max(item.mos for item in items)
    if not high > low:
        raise DatasetError(f"{name}: every MOS in {source} is {low}; nothing to learn or evaluate")
    return QualityDataset(name, list(items), ScoreScale(low, high, higher_is_better), Path(root))


def parse_mos(value: object, where: str) -> float:
    """A MOS cell as a float; :class:`DatasetError` naming ``where`` if it is not a number."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise DatasetError(f"{where}: MOS {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DatasetError(f"{where}: MOS {value!r} is not a finite number")
    return number
