"""Training throughput: a BPCLIP training step against a bare backbone forward+backward step.

Both run in this process on the same batch size and image size; the ratio printed is
(bare backbone step time) / (BPCLIP training step time), so 1.0 means the heads, the
loss and the optimiser cost nothing extra. The target is at least 0.8.

    .venv/bin/python benchmarks/bench_train.py --preset tiny --batch-size 8 --size 224
"""

from __future__ import annotations

import argparse
import time

import torch

from bpclip_core.model.backbone import build_backbone
from bpclip_core.model.bpclip import BPCLIP
from bpclip_core.model.config import preset
from bpclip_core.training.trainer import TensorOutputs, calibrate_batchnorm, train_step


def _median_seconds(step, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--mode", default="nr", choices=("nr", "fr"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset(args.preset, args.mode)
    images = torch.rand(args.batch_size, 3, args.size, args.size)
    references = torch.rand_like(images)
    targets = torch.rand(args.batch_size)

    backbone = build_backbone(config.backbone).train()
    calibrate_batchnorm(backbone, [images])
    bare_optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)
    passes = 2 if args.mode == "fr" else 1  # FR runs the backbone on both images

    def bare_step() -> None:
        loss = sum(sum(level.mean() for level in backbone(images)) for _ in range(passes))
        bare_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        bare_optimizer.step()

    model = BPCLIP(config, torch.nn.functional.normalize(torch.randn(40, config.clip_dim), dim=-1)).train()
    calibrate_batchnorm(model.backbone, [images])
    wrapped = TensorOutputs(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-5)
    batch = {"distorted": images, "target": targets}
    if args.mode == "fr":
        batch["reference"] = references

    def bpclip_step() -> None:
        train_step(wrapped, optimizer, batch, torch.device("cpu"))

    bare = _median_seconds(bare_step, args.repeats, args.warmup)
    full = _median_seconds(bpclip_step, args.repeats, args.warmup)
    print(
        f"{args.preset} {args.mode.upper()} batch {args.batch_size} at {args.size}px, {torch.get_num_threads()} threads"
    )
    print(f"bare backbone fwd+bwd+AdamW: {bare * 1000:.1f} ms/step, {args.batch_size / bare:.1f} img/s")
    print(f"BPCLIP training step:       {full * 1000:.1f} ms/step, {args.batch_size / full:.1f} img/s")
    print(f"ratio (bare / BPCLIP) = {bare / full:.3f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
