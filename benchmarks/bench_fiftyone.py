"""FiftyOne scoring overhead: compute_quality on a dataset against the engine on the same files.

Prints samples/s of both (same model, batch size and images, in this process) and their
ratio, the number of bulk database writes per batch, and the peak RSS growth.

    .venv/bin/python benchmarks/bench_fiftyone.py --samples 10000 --config tiny --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--config", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--size", type=int, default=64, help="image side in px")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    import fiftyone as fo

    from bpclip_core.running.engine import QualityEngine, load_quality_model
    from bpclip_core.weights.checkpoint import init_checkpoint
    from bpclip_plugins.fiftyone import compute_quality

    process = psutil.Process()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.samples):
            paths.append(root / f"{i:06d}.jpg")
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(paths[-1])
        checkpoint = init_checkpoint(args.config, "nr", root / "model.safetensors", random=True)
        engine = QualityEngine(load_quality_model(checkpoint), batch_size=args.batch)
        start = time.perf_counter()
        engine.score([str(p) for p in paths])
        engine_rate = args.samples / (time.perf_counter() - start)

        dataset = fo.Dataset(overwrite=True)
        dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
        writes = []
        original = fo.Dataset.set_values
        fo.Dataset.set_values = lambda self, *a, **k: (writes.append(a[0]), original(self, *a, **k))[1]
        rss_before = process.memory_info().rss
        start = time.perf_counter()
        compute_quality(dataset, checkpoint=str(checkpoint), batch_size=args.batch)
        fiftyone_rate = args.samples / (time.perf_counter() - start)
        rss_growth = (process.memory_info().rss - rss_before) / 1e6
        fo.Dataset.set_values = original
        dataset.delete()
    batches = -(-args.samples // args.batch)
    print(f"{args.samples} samples, {args.config} model, {args.size}px, batch {args.batch}")
    print("| path | samples/s |\n|---|---:|")
    print(
        f"| engine on the files | {engine_rate:.1f} |\n| compute_quality on a FiftyOne dataset | {fiftyone_rate:.1f} |"
    )
    print(f"\nratio FiftyOne / engine: {fiftyone_rate / engine_rate:.3f} (goal >= 0.8)")
    print(f"bulk writes: {len(writes)} for {batches} batches ({len(writes) / batches:.2f} per batch; goal <= 1)")
    print(f"RSS growth during the run: {rss_growth:.0f} MB")


if __name__ == "__main__":
    main()
