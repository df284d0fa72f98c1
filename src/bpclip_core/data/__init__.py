"""Datasets for training and evaluation: readers, splits, synthetic distortions, transforms."""

from bpclip_core.data.readers import (
    DATASET_READERS,
    koniq_official_split,
    read_csv_dataset,
    read_dataset,
    read_pyiqa_meta_info,
)
from bpclip_core.data.records import DatasetError, QualityDataset, QualityItem, build_dataset
from bpclip_core.data.splits import (
    Split,
    SplitSet,
    content_split,
    load_splits,
    make_splits,
    official_split,
    save_splits,
)
from bpclip_core.data.synthetic import DISTORTIONS, distort, pseudo_mos, synthesize_dataset

__all__ = [
    "DATASET_READERS",
    "DISTORTIONS",
    "DatasetError",
    "QualityDataset",
    "QualityItem",
    "Split",
    "SplitSet",
    "build_dataset",
    "content_split",
    "distort",
    "koniq_official_split",
    "load_splits",
    "make_splits",
    "official_split",
    "pseudo_mos",
    "read_csv_dataset",
    "read_dataset",
    "read_pyiqa_meta_info",
    "save_splits",
    "synthesize_dataset",
]
