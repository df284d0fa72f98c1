"""How much the BPCLIP heads cost on top of their backbone (CPU or GPU, fp32).

Prints images/s of the bare backbone (five-level forward), BPCLIP-NR and BPCLIP-FR (FR
pairs against two backbone passes) at one size and batch, and their ratios, all measured
in this process on the same inputs. Random weights: speed does not depend on them.

    .venv/bin/python benchmarks/bench_model.py --config paper --size 384 --batch 8
"""

from __future__ import annotations

import argparse
import time

import torch

from bpclip_core import BPCLIP, preset


def throughput(fn, batch: int, warmup: int, repeats: int) -> float:
    """Images (or pairs) per second of ``fn``, the best of ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    nr_config = preset(args.config, "nr")
    text = torch.randn(40, nr_config.clip_dim)
    nr = BPCLIP(nr_config, text).eval().to(device)
    fr = BPCLIP(preset(args.config, "fr"), text).eval().to(device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    y = torch.rand_like(x)

    with torch.inference_mode():
        rates = {
            "backbone (5 levels)": throughput(lambda: nr.backbone(x), args.batch, 1, args.repeats),
            "BPCLIP-NR": throughput(lambda: nr(x), args.batch, 1, args.repeats),
            "backbone x2 (FR baseline)": throughput(
                lambda: (nr.backbone(x), nr.backbone(y)), args.batch, 1, args.repeats
            ),
            "BPCLIP-FR": throughput(lambda: fr(x, y), args.batch, 1, args.repeats),
        }
    print(f"device {device}, config {args.config}, {args.size}x{args.size}, batch {args.batch}, fp32")
    print(f"{'model':<28}{'img/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<28}{rate:>10.2f}")
    print(f"NR / backbone: {rates['BPCLIP-NR'] / rates['backbone (5 levels)']:.3f}")
    print(f"FR / two backbone passes: {rates['BPCLIP-FR'] / rates['backbone x2 (FR baseline)']:.3f}")


if __name__ == "__main__":
    main()
