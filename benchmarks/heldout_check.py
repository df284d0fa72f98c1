"""A quick look at any checkpoint (e.g. an intermediate one) on part of the default-model data.

The same figures as the rebuild pipeline (bpclip_core/training/synthetic_eval.py), on every
``--every``-th reference of the held-out pictures (default), to follow a training run, or of
the training pictures (``--part train``), to see whether a model fits what it was trained on:

    .venv/bin/python benchmarks/heldout_check.py data/default-models/run-nr/model.safetensors --every 5
    .venv/bin/python benchmarks/heldout_check.py src/bpclip_core/weights/bundled/bpclip-nr.safetensors \
        --part train --every 8
    .venv/bin/python benchmarks/heldout_check.py src/bpclip_core/weights/bundled/bpclip-fr.safetensors --precision fp16
    .venv/bin/python benchmarks/heldout_check.py src/bpclip_core/weights/bundled/bpclip-nr.safetensors --part train \
        --data synthetic-min12-types6 --every 8    # the NR model's own (wider) training content

The held-out references are the same in every data folder; the training ones are not.

Items without a score (a non-finite one, e.g. float16 overflow) are counted as ``unscored``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bpclip_core.data.readers import read_csv_dataset
from bpclip_core.data.splits import load_splits
from bpclip_core.training.synthetic_eval import evaluate_synthetic
from bpclip_core.weights.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--work", type=Path, default=Path("data/default-models"))
    parser.add_argument("--every", type=int, default=5, help="use every n-th reference")
    parser.add_argument(
        "--data", default="synthetic", help="the synthetic data folder in --work (default: the rebuild's)"
    )
    parser.add_argument(
        "--source", choices=("all", "procedural", "registry"), default="all",
        help="only the procedural pictures, or only those of the package registries (photos, artwork)",
    )  # fmt: skip
    parser.add_argument("--part", choices=("heldout", "train"), default="heldout", help="which pictures")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="the engine's (autocast)")
    args = parser.parse_args()
    data = args.work / args.data
    dataset = read_csv_dataset(data / "default-models.csv")
    split = load_splits(data / "split.json", dataset).splits[0]
    pictures = dataset.subset(split.test if args.part == "heldout" else split.train)
    references = sorted(
        content
        for content in {item.content for item in pictures.items}
        if args.source == "all" or (Path(content).name.startswith("procedural-") == (args.source == "procedural"))
    )[:: args.every]
    part = pictures.subset([i for i, item in enumerate(pictures.items) if item.content in references])
    figures = evaluate_synthetic(load_checkpoint(args.checkpoint), part, precision=args.precision)
    print(f"{len(references)} {args.part} references ({args.source}), {len(part)} items, {args.precision}")
    print(json.dumps(figures["overall"]), json.dumps(figures["adjective_accuracy_per_dimension"]))
    for name, row in sorted(figures["per_type"].items()):
        print(f"{name:22s} monotonicity {row['monotonicity']:.3f}  AUC {row['auc']:.3f}")


if __name__ == "__main__":
    main()
