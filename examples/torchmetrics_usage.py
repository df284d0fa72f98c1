"""BPCLIP as a torchmetrics metric, e.g. to monitor a restoration model during training.

.venv/bin/bpclip init-checkpoint --config tiny --mode nr --random --out tiny-nr.safetensors
.venv/bin/python examples/torchmetrics_usage.py tiny-nr.safetensors
"""

import sys

import torch
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from bpclip_plugins.torchmetrics import BPCLIPScore, bpclip_score

checkpoint = sys.argv[1] if len(sys.argv) > 1 else None  # None: BPCLIP_CHECKPOINT, cache, else zero-shot
no_reference = MetricCollection({"bpclip": BPCLIPScore(checkpoint=checkpoint)})  # NR metrics take preds only
psnr = PeakSignalNoiseRatio(data_range=1.0)
print("model:", no_reference["bpclip"].model_description)
for _ in range(3):  # stand-in for a validation loop
    clean = torch.rand(4, 3, 96, 96)
    restored = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    no_reference.update(restored)
    psnr.update(restored, clean)
print({"psnr": float(psnr.compute()), **{name: float(v) for name, v in no_reference.compute().items()}})
print(bpclip_score(torch.rand(2, 3, 96, 96), checkpoint=checkpoint, reduction="none", return_adjectives=True))
