"""How large a checkpoint's feature maps are, against float16's range (65504).

Per backbone level F_1..F_5: standard deviation and largest |value| on the four originals of
``examples/images`` (resized to the model's image size), and the largest activation of any
backbone layer on those plus the synthetic extremes of ``bpclip_core.model.feature_scale.probe_images``.
A frozen-BatchNorm backbone trained from random initialisation can grow its scale level by
level; above 65504 fp16 autocast overflows (docs/training.md):

    .venv/bin/python benchmarks/feature_range.py src/bpclip_core/weights/bundled/bpclip-{nr,fr}.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from bpclip_core.inputs.decoding import load_image
from bpclip_core.model.feature_scale import FP16_SAFE_PEAK, peak_activation, probe_images
from bpclip_core.weights.checkpoint import load_checkpoint

PICTURES = ("astronaut", "coffee", "chelsea", "rocket")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def _load(name: str, size: int) -> torch.Tensor:
    image = load_image(EXAMPLES / f"{name}.jpg")  # squashed square: the four are stacked in one batch
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp_(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args()
    fp16_max = torch.finfo(torch.float16).max
    for path in args.checkpoints:
        model = load_checkpoint(path).float().eval()
        pictures = [_load(name, model.config.image_size) for name in PICTURES]
        with torch.no_grad():
            levels = model.backbone(torch.stack(pictures))
        print(path)
        for index, level in enumerate(levels, start=1):
            print(f"  F_{index}: std {float(level.std()):10.3g}   max |value| {float(level.abs().max()):10.3g}")
        peak = peak_activation(model, probe_images(pictures))
        verdict = "overflows float16" if peak > fp16_max else f"fits float16 ({fp16_max / peak:.0f}x headroom)"
        print(f"  largest backbone activation (with extremes): {peak:.4g}: {verdict}; target <= {FP16_SAFE_PEAK:g}")


if __name__ == "__main__":
    main()
