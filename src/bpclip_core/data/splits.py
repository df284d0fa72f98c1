"""Train/validation/test splits as the paper uses them, saved to JSON for exact reruns.

* FR datasets: 6:2:2 by reference image, so no content is shared between the parts.
* NR datasets: 8:2 (train/test; no validation part: the trainer then keeps the last epoch).
* Ten seeded random splits (seeds 0..9 by default); KonIQ-10k also has its official split.

A split file records the dataset's name, item count and fingerprint and is checked on
load: a split file made for another dataset (or another version of it) is an error.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bpclip_core.data.records import DatasetError, QualityDataset

FR_RATIOS: tuple[float, float, float] = (0.6, 0.2, 0.2)
NR_RATIOS: tuple[float, float, float] = (0.8, 0.0, 0.2)
SPLIT_FORMAT = "bpclip-splits"


@dataclass
class Split:
    """Item indices of the three parts of one split."""

    train: list[int]
    val: list[int]
    test: list[int]
    seed: int | None = None
    name: str = ""


@dataclass
class SplitSet:
    """The splits of one dataset, as stored in a split file."""

    dataset: str
    num_items: int
    fingerprint: str
    protocol: str
    splits: list[Split] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPLIT_FORMAT, **asdict(self)}

    def check_matches(self, dataset: QualityDataset, source: str = "split file") -> None:
        """Raise :class:`DatasetError` unless these splits were made for ``dataset``."""
        if self.dataset != dataset.name or self.num_items != len(dataset):
            raise DatasetError(
                f"{source} was made for dataset {self.dataset!r} with {self.num_items} items, but the dataset "
                f"given is {dataset.name!r} with {len(dataset)} items; make new splits with `bpclip splits`"
            )
        if self.fingerprint != dataset.fingerprint():
            raise DatasetError(
                f"{source} was made for a different version of {dataset.name!r} (same size, different "
                f"images or MOS: fingerprint {self.fingerprint} vs {dataset.fingerprint()})"
            )


def default_ratios(dataset: QualityDataset) -> tuple[float, float, float]:
    """The paper's ratios: 6:2:2 for FR datasets, 8:2 (no validation) for NR datasets."""
    return FR_RATIOS if dataset.mode == "fr" else NR_RATIOS


def content_split(dataset: QualityDataset, seed: int, ratios: Sequence[float] | None = None) -> Split:
    """One random split by content group (reference image for FR): no group spans two parts."""
    ratios = tuple(ratios or default_ratios(dataset))
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(dataset.items):
        groups.setdefault(item.content or str(item.image), []).append(index)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)
    n_train = round(ratios[0] * n)
    n_val = round(ratios[1] * n) if ratios[1] > 0 else 0
    if n_train < 1 or n - n_train - n_val < 1:
        raise DatasetError(f"{dataset.name}: {n} content groups are too few for split ratios {ratios}")
    parts = (keys[:n_train], keys[n_train : n_train + n_val], keys[n_train + n_val :])
    train, val, test = (sorted(i for k in part for i in groups[k]) for part in parts)
    return Split(train, val, test, seed, f"seed{seed}")


def make_splits(
    dataset: QualityDataset, num_splits: int = 10, ratios: Sequence[float] | None = None, first_seed: int = 0
) -> SplitSet:
    """``num_splits`` seeded content-disjoint random splits (seeds ``first_seed`` onwards)."""
    ratios = tuple(ratios or default_ratios(dataset))
    splits = [content_split(dataset, seed, ratios) for seed in range(first_seed, first_seed + num_splits)]
    protocol = f"random {':'.join(f'{r:g}' for r in ratios)} by {'reference' if dataset.mode == 'fr' else 'image'}"
    return SplitSet(dataset.name, len(dataset), dataset.fingerprint(), protocol, splits)


def official_split(dataset: QualityDataset, sets: dict[str, list[str]]) -> SplitSet:
    """A split given by image names per part (e.g. KonIQ-10k's ``set`` column).

    An NR item is found by its original name (its ``content``), so the cached resized copies
    of KonIQ-10k and SPAQ (``x.jpg`` read from ``x.png``) keep their official parts.
    """
    index = {
        (item.content if item.reference is None and item.content else item.image.name): i
        for i, item in enumerate(dataset.items)
    }
    parts: dict[str, list[int]] = {}
    for part in ("train", "val", "test"):
        unknown = [name for name in sets.get(part, []) if name not in index]
        if unknown:
            raise DatasetError(
                f"{dataset.name}: the official split names {len(unknown)} unknown images, e.g. {unknown[0]}"
            )
        parts[part] = sorted(index[name] for name in sets.get(part, []))
    split = Split(parts["train"], parts["val"], parts["test"], None, "official")
    return SplitSet(dataset.name, len(dataset), dataset.fingerprint(), "official", [split])


def save_splits(splits: SplitSet, path: str | Path) -> Path:
    """Write a split file (JSON) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(splits.to_dict(), indent=1))
    partial.replace(path)
    return path


def load_splits(path: str | Path, dataset: QualityDataset | None = None) -> SplitSet:
    """Read a split file; with ``dataset``, check that it was made for that dataset."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SPLIT_FORMAT:
            raise DatasetError(f"{path} is not a bpclip split file (format {data.get('format')!r})")
        splits = SplitSet(
            dataset=data["dataset"],
            num_items=int(data["num_items"]),
            fingerprint=data["fingerprint"],
            protocol=data["protocol"],
            splits=[Split(**s) for s in data["splits"]],
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path} is not a valid bpclip split file: {exc}") from exc
    for split in splits.splits:
        everything = split.train + split.val + split.test
        if any(not 0 <= i < splits.num_items for i in everything) or len(set(everything)) != len(everything):
            raise DatasetError(f"{path}: split {split.name!r} has out-of-range or repeated indices")
    if dataset is not None:
        splits.check_matches(dataset, f"split file {path}")
    return splits
