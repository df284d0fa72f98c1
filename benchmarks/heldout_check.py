"""A quick look at any checkpoint (e.g. an intermediate one) on part of the held-out references.

The same figures as the rebuild pipeline (bpclip_core/training/synthetic_eval.py), on every
``--every``-th held-out reference of the default-model data, to follow a training run:

    .venv/bin/python benchmarks/heldout_check.py data/default-models/run-nr/best.safetensors --every 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bpclip_core.checkpoint import load_checkpoint
from bpclip_core.data.readers import read_csv_dataset
from bpclip_core.data.splits import load_splits
from bpclip_core.training.synthetic_eval import evaluate_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--work", type=Path, default=Path("data/default-models"))
    parser.add_argument("--every", type=int, default=5, help="use every n-th held-out reference")
    args = parser.parse_args()
    data = args.work / "synthetic"
    dataset = read_csv_dataset(data / "default-models.csv")
    heldout = dataset.subset(load_splits(data / "split.json", dataset).splits[0].test)
    references = sorted({item.content for item in heldout.items})[:: args.every]
    part = heldout.subset([i for i, item in enumerate(heldout.items) if item.content in references])
    figures = evaluate_synthetic(load_checkpoint(args.checkpoint), part)
    print(f"{len(references)} held-out references, {len(part)} items")
    print(json.dumps(figures["overall"]), json.dumps(figures["adjective_accuracy_per_dimension"]))


if __name__ == "__main__":
    main()
