"""benchmarks/content_scaling.py: the subsets of registry pictures it trains on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bpclip_core.data.records import QualityDataset, QualityItem
from bpclip_core.data.splits import Split

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "content_scaling.py"


def _script():
    spec = importlib.util.spec_from_file_location("content_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dataset() -> tuple[QualityDataset, Split]:
    pictures = [f"gnome-p{k}" for k in range(8)] + ["procedural-deadleaves-001", "procedural-noise-002"]
    items = []
    for picture in pictures:
        for crop in range(2):
            reference = f"train/reference/{picture}__{crop:02d}.png"
            for level in range(3):
                image = Path(f"{picture}-{crop}-{level}.png")
                items.append(QualityItem(image, 5.0 - level, Path(reference), reference))
    held_out = "heldout/reference/skimage-astronaut__00.png"
    items += [QualityItem(Path(f"astronaut-{level}.png"), 5.0 - level, Path(held_out), held_out) for level in range(3)]
    train = list(range(len(items) - 3))
    return QualityDataset("synthetic", items), Split(train, [], list(range(len(items) - 3, len(items))))


def test_subsets_keep_every_procedural_picture_and_nest_the_registry_ones():
    script = _script()
    dataset, split = _dataset()
    pictures = {}
    for fraction in (0.25, 0.5, 1.0):
        subset, kept = script.subset_split(dataset, split, fraction, seed=0)
        trained = {script.picture_of(dataset.items[i].content) for i in subset.train}
        assert len(kept) == round(8 * fraction)
        assert trained == set(kept) | {"procedural-deadleaves-001", "procedural-noise-002"}
        assert subset.test == split.test  # the held-out references never change
        assert subset.train == sorted(subset.train)  # the full split's order, filtered
        pictures[fraction] = set(kept)
    assert pictures[0.25] < pictures[0.5] < pictures[1.0]
    assert script.subset_split(dataset, split, 1.0, seed=0)[0].train == split.train  # fraction 1: the recipe's own
