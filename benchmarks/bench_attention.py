"""TorchScript against eager attention, measured interleaved in one process.

`bench_inference.py` measures each backend in turn, so a slow stretch of a shared machine
lands on one row; here the engines take turns, round after round, and the best round of
each is compared. This is the measurement behind ``DEFAULT_ATTENTION`` in
``bpclip_core/running/engine.py``.

    .venv/bin/python benchmarks/bench_attention.py            # CPU, 384x384, batch 8
"""

from __future__ import annotations

import argparse
import time

import torch

from bpclip_core import BPCLIP, preset
from bpclip_core.running.engine import QualityEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    images = torch.rand(args.batch, 3, args.size, args.size)
    references = torch.rand(args.batch, 3, args.size, args.size)
    engines: dict[tuple[str, str], QualityEngine] = {}
    for mode in ("nr", "fr"):
        for backend in ("script", "eager"):
            torch.manual_seed(0)
            model = BPCLIP(preset("paper", mode=mode, image_size=args.size), torch.randn(40, 1024))
            engines[mode, backend] = QualityEngine(model, device=args.device, attention=backend)
    best = dict.fromkeys(engines, float("inf"))
    with torch.inference_mode():
        for round_index in range(args.rounds + 2):  # two warm-up rounds: TorchScript optimises on its second run
            for (mode, backend), engine in engines.items():
                start = time.perf_counter()
                engine.predict(images, references if mode == "fr" else None)
                if round_index >= 2:
                    best[mode, backend] = min(best[mode, backend], time.perf_counter() - start)
    print(f"device {args.device}, {args.size}x{args.size}, batch {args.batch}, best of {args.rounds} rounds\n")
    print("| mode | TorchScript (images/s) | eager (images/s) | eager / TorchScript |\n|---|---:|---:|---:|")
    for mode in ("nr", "fr"):
        script, eager = args.batch / best[mode, "script"], args.batch / best[mode, "eager"]
        print(f"| {mode.upper()} | {script:.2f} | {eager:.2f} | {eager / script:.3f} |")


if __name__ == "__main__":
    main()
