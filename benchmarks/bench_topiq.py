"""BPCLIP against pyiqa's TOPIQ, the two run in turns (interleaved) in this process.

`bench_inference.py` measures its rows one after another, so slow drifts of a shared machine
land on one row; here each BPCLIP call is followed by a TOPIQ call on the same inputs and the
best of each is kept. TOPIQ runs in channels_last, its faster layout on CPU.

    .venv/bin/python benchmarks/bench_topiq.py            # CPU, 384x384, batch 8, NR and FR
"""

from __future__ import annotations

import argparse
import platform

import psutil
import torch
from bench_inference import topiq
from bench_pooling import interleaved

from bpclip_core import BPCLIP, preset
from bpclip_core.running.engine import QualityEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(0)
    x, y = (torch.rand(args.batch, 3, args.size, args.size) for _ in range(2))
    xl, yl = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    print(
        f"{platform.machine()}, {psutil.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, cpu, fp32, {args.size}x{args.size}, batch {args.batch}\n"
    )
    print("| mode | BPCLIP (images/s) | TOPIQ, channels_last (images/s) | BPCLIP / TOPIQ | goal |")
    print("|---|---:|---:|---:|---:|")
    for mode in ("nr", "fr"):
        net = topiq(mode, torch.device("cpu"))
        if net is None:
            raise SystemExit("pyiqa is not installed: pip install -e '.[pyiqa]'")
        net = net.to(memory_format=torch.channels_last)
        model = BPCLIP(preset("paper", mode=mode, image_size=args.size), torch.randn(40, 1024))
        engine = QualityEngine(model, device="cpu", batch_size=args.batch)
        reference = y if mode == "fr" else None
        with torch.inference_mode():
            best = interleaved(
                {
                    "bpclip": lambda e=engine, r=reference: e.predict(x, r),
                    "topiq": (lambda n=net: n(xl, yl)) if mode == "fr" else (lambda n=net: n(xl)),
                },
                args.repeats,
            )
        rates = {name: args.batch / seconds for name, seconds in best.items()}
        print(
            f"| {mode.upper()} | {rates['bpclip']:.2f} | {rates['topiq']:.2f} "
            f"| {rates['bpclip'] / rates['topiq']:.3f} | >= 1.5 |"
        )


if __name__ == "__main__":
    main()
