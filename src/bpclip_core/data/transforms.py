"""Torch datasets over a :class:`QualityDataset`: decoding, the paper's augmentation, targets.

Training: a random ``patch_size`` crop plus random horizontal and vertical flips, the same
for a distorted image and its reference; ``train=False`` gives the centre patch (BatchNorm
calibration). Images smaller than the patch are first enlarged (short side) to the patch
size. Evaluation does not come here: it scores files through the engine and its test-time
protocol (training/evaluation.py), as users' scores are made.

Randomness comes from a generator seeded by (seed, epoch, item index): the augmentation
of an item does not depend on worker count, process rank or whether a run was resumed.
With ``shared_crops`` the seed uses the item's group (its reference picture) instead, so
every version of one picture gets the same crop and flips in an epoch (for ranking losses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bpclip_core.data.records import QualityDataset
from bpclip_core.inputs.decoding import load_image


def _ensure_min_side(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    if min(height, width) >= size:
        return image
    scale = size / min(height, width)
    new = (max(size, round(height * scale)), max(size, round(width * scale)))
    return F.interpolate(image[None], size=new, mode="bilinear", align_corners=False)[0].clamp_(0, 1)


def reference_groups(dataset: QualityDataset) -> list[int]:
    """Per item, the index of its picture (its ``content`` key, as content-disjoint splits use).

    Items sharing a reference share a group, a pristine item included; an NR item is its own
    picture. Groups are numbered in order of first appearance.
    """
    numbers: dict[str, int] = {}
    return [numbers.setdefault(item.content or str(item.image), len(numbers)) for item in dataset.items]


class QualityImages(torch.utils.data.Dataset):
    """Items of a :class:`QualityDataset` as tensors for training or evaluation.

    Each item is a dict: ``distorted`` (3, P, P), ``reference`` (FR only), ``target`` (MOS
    normalised to [0, 1] by the dataset's score scale, eq. 10), ``mos``, ``index``,
    ``distortion`` (the item's distortion type, "" where unknown) and ``group`` (the index of
    the item's reference picture, :func:`reference_groups`).

    Args:
        dataset: the rated images.
        patch_size: crop size (the paper's 384).
        train: random crops and flips if True, else the centre patch.
        seed: base seed of the augmentation.
        hflip, vflip: enable the random flips (training only).
        cache: keep decoded images in memory (8-bit), for small datasets.
        with_reference: load references (FR models); False gives NR items from an FR dataset
            (its distorted images alone).
        shared_crops: seed the training crop and flips by the item's group, not the item.
    """

    def __init__(
        self,
        dataset: QualityDataset,
        patch_size: int,
        train: bool,
        seed: int = 0,
        hflip: bool = True,
        vflip: bool = True,
        cache: bool = False,
        with_reference: bool = True,
        shared_crops: bool = False,
    ) -> None:
        self.dataset = dataset
        self.patch_size = patch_size
        self.train = train
        self.seed = seed
        self.hflip, self.vflip = hflip, vflip
        self.cache: dict[str, torch.Tensor] | None = {} if cache else None
        self.with_reference = with_reference
        self.shared_crops = shared_crops
        self.groups = reference_groups(dataset)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, path) -> torch.Tensor:
        if self.cache is None:
            return load_image(path)
        key = str(path)
        if key not in self.cache:
            self.cache[key] = (load_image(path) * 255).round().to(torch.uint8)
        return self.cache[key].float() / 255.0

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset.items[index]
        images = [self._load(item.image)]
        if item.reference is not None and self.with_reference:
            reference = self._load(item.reference)
            if reference.shape != images[0].shape:
                reference = F.interpolate(reference[None], size=images[0].shape[-2:], mode="bilinear")[0]
            images.append(reference)
        images = [_ensure_min_side(im, self.patch_size) for im in images]
        height, width = images[0].shape[-2:]
        size = self.patch_size
        if self.train:
            key = self.groups[index] if self.shared_crops else index
            rng = np.random.default_rng([self.seed, self.epoch, key])
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
            flip_h, flip_v = rng.random() < 0.5, rng.random() < 0.5
            images = [im[:, top : top + size, left : left + size] for im in images]
            if self.hflip and flip_h:
                images = [im.flip(-1) for im in images]
            if self.vflip and flip_v:
                images = [im.flip(-2) for im in images]
        else:
            top, left = (height - size) // 2, (width - size) // 2
            images = [im[:, top : top + size, left : left + size] for im in images]
        out: dict[str, Any] = {
            "distorted": images[0].contiguous(),
            "target": torch.tensor(float(self.dataset.score_scale.normalise(item.mos)), dtype=torch.float32),
            "mos": torch.tensor(item.mos, dtype=torch.float64),
            "index": index,
            "distortion": item.distortion,
            "group": self.groups[index],
        }
        if len(images) == 2:
            out["reference"] = images[1].contiguous()
        return out
