"""Gated local pooling: BPCLIP's pooling paths against the plain form, in this process.

For each backbone level of the paper model (random weights, real feature shapes), the plain
form writes the full-size products ``mask * part`` and pools them (for FR, on the whole
batch at once); BPCLIP's form (`bpclip_core.model.gated_pooling`) runs the masked window sums as
matrix products on channels_last maps and, for FR inference, the batch in chunks of at most
``CHUNK_BYTES`` per map. The two are timed interleaved; the ratios are the numbers to quote.

    .venv/bin/python benchmarks/bench_pooling.py          # 384x384, batch 8, CPU
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import psutil
import torch
import torch.nn.functional as F

from bpclip_core import BPCLIP, preset
from bpclip_core.model.gated_pooling import GatedLocalPoolingFR, masked_window_means


def plain_fr(glp: GatedLocalPoolingFR, distorted: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int]):
    """Eq. 1 pooled part by part: full-size difference and products for the whole batch."""
    difference = (distorted - reference).abs()
    mask = torch.sigmoid(glp.gate(difference))
    return torch.cat([F.adaptive_avg_pool2d(p * mask, grid) for p in (distorted, reference, difference)], dim=1)


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each candidate, the candidates taking turns (one warm-up call each)."""
    for fn in candidates.values():
        fn()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = BPCLIP(preset("paper", mode="fr"), torch.randn(40, 1024)).eval().to(memory_format=torch.channels_last)
    images = [torch.rand(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)]
    images.append(torch.rand_like(images[0]))
    print(
        f"{platform.machine()}, {psutil.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, cpu, fp32, {args.size}x{args.size}, batch {args.batch}, channels_last\n"
    )
    print(
        "| level | map (C x H x W) | NR plain (ms) | NR BPCLIP (ms) | NR ratio "
        "| FR plain (ms) | FR BPCLIP (ms) | FR ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    totals = dict.fromkeys(("nr plain", "nr ours", "fr plain", "fr ours"), 0.0)
    with torch.inference_mode():
        distorted, reference = (model.backbone(x) for x in images)
        grid = (distorted[-1].shape[-2], distorted[-1].shape[-1])
        for level, (glp, d, r) in enumerate(zip(model.gated_pooling, distorted, reference), start=1):
            mask = torch.sigmoid(glp.gate(d))
            best = interleaved(
                {
                    "nr plain": lambda d=d, m=mask: F.adaptive_avg_pool2d(d * m, grid),
                    "nr ours": lambda d=d, m=mask: masked_window_means([d], m, grid),
                    "fr plain": lambda g=glp, d=d, r=r: plain_fr(g, d, r, grid),
                    "fr ours": lambda g=glp, d=d, r=r: g(d, r, grid),
                },
                args.repeats,
            )
            for name, seconds in best.items():
                totals[name] += seconds
            ms = {name: 1000 * seconds for name, seconds in best.items()}
            print(
                f"| F_{level} | {d.shape[1]} x {d.shape[2]} x {d.shape[3]} "
                f"| {ms['nr plain']:.1f} | {ms['nr ours']:.1f} "
                f"| {best['nr plain'] / best['nr ours']:.2f} | {ms['fr plain']:.1f} | {ms['fr ours']:.1f} "
                f"| {best['fr plain'] / best['fr ours']:.2f} |"
            )
    ms = {name: 1000 * seconds for name, seconds in totals.items()}
    print(
        f"| all | | {ms['nr plain']:.1f} | {ms['nr ours']:.1f} | {totals['nr plain'] / totals['nr ours']:.2f} "
        f"| {ms['fr plain']:.1f} | {ms['fr ours']:.1f} | {totals['fr plain'] / totals['fr ours']:.2f} |"
    )
    print("\n(NR columns: the masked window means of one map; FR: the whole FR gated pooling of a level.)")


if __name__ == "__main__":
    main()
