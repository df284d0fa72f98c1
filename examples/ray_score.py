"""Score a folder of images (or a Parquet list of paths) with Ray Data and write Parquet.

    pip install 'bpclip[ray]'
    python examples/ray_score.py examples/images scores.parquet              # a local Ray cluster
    python examples/ray_score.py paths.parquet scores.parquet --address auto --gpus-per-actor 1

A folder is listed on the driver (bpclip_core.inputs.decoding.find_images) and becomes a dataset of
one row per image; a Parquet input (a file or a folder of files, local or ``s3://...``) needs
a column of paths (``--path-column``, and ``--reference-column`` for a full-reference model).
The output is a folder of Parquet files: the input columns and BPCLIP's result columns
(score, mos, top_adjectives, top_adjective_probabilities, <dimension>_goodness, error).
With ``--address auto`` (or ``RAY_ADDRESS``) it joins a running cluster (``ray start`` /
``ray up``; see docs/gpus-and-clusters.md); image paths and the checkpoint must be readable on every node.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import ray
import ray.data

from bpclip_core.inputs.decoding import ScanProblem, find_images
from bpclip_plugins.ray import score_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a folder of images, or a Parquet file/folder with a column of paths")
    parser.add_argument("output", help="the Parquet folder to write")
    parser.add_argument("--checkpoint", help="a BPCLIP checkpoint file or name (default: the bundled model)")
    parser.add_argument("--path-column", default="path")
    parser.add_argument("--reference-column", help="the column of reference paths (full-reference models)")
    parser.add_argument("--address", help="a Ray cluster to join (auto: the local node's); default: start one")
    parser.add_argument("--actors", type=int, help="actors (models) in the pool; default: autoscale to the cluster")
    parser.add_argument("--gpus-per-actor", type=float, help="e.g. 1; default: no GPU, CPU scoring")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per actor call")
    parser.add_argument("--num-workers", type=int, help="decoding processes per actor (engine default)")
    parser.add_argument("--cpu", action="store_true", help="score on the CPU even where a GPU is visible")
    return parser


def read_inputs(source: str, path_column: str) -> ray.data.Dataset:
    """A dataset of paths: a folder's images (one row each) or a Parquet table of paths."""
    if "://" not in source and Path(source).is_dir() and not any(Path(source).glob("*.parquet")):
        found = find_images([source])
        for problem in (f for f in found if isinstance(f, ScanProblem)):
            print(f"skipped: {problem.reason}", file=sys.stderr)
        return ray.data.from_items([{path_column: str(p)} for p in found if not isinstance(p, ScanProblem)])
    return ray.data.read_parquet(source)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not ray.is_initialized():
        ray.init(address=args.address)
    options = {"device": "cpu"} if args.cpu else {}
    if args.num_workers is not None:
        options["num_workers"] = args.num_workers
    scored = score_dataset(
        read_inputs(args.input, args.path_column),
        args.checkpoint,
        path_column=args.path_column,
        reference_column=args.reference_column,
        actors=args.actors,
        num_gpus=args.gpus_per_actor,
        ray_batch_size=args.batch_size,
        **options,
    )
    scored.write_parquet(args.output)
    print(f"wrote the scores to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
