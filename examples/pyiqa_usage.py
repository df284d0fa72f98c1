"""BPCLIP inside pyiqa: the same create_metric call as any other pyiqa metric.

.venv/bin/bpclip init-checkpoint --config tiny --mode nr --random --out tiny-nr.safetensors
.venv/bin/python examples/pyiqa_usage.py tiny-nr.safetensors examples/images/astronaut.jpg
"""

import sys

import pyiqa
import torch

import bpclip_plugins  # noqa: F401  (registers bpclip, bpclip_fr and bpclip_zeroshot with pyiqa)

checkpoint, image = sys.argv[1], sys.argv[2]
metric = pyiqa.create_metric("bpclip", checkpoint=checkpoint, device="cpu")
print(metric.metric_mode, "lower_better:", metric.lower_better, "range:", metric.score_range)
print("score of", image, "=", metric(image).item())
loss = pyiqa.create_metric("bpclip", checkpoint=checkpoint, as_loss=True, device="cpu")
x = torch.rand(1, 3, 96, 96, requires_grad=True)
(1 - loss(x)).backward()  # maximise quality: gradients reach the image
print("gradient norm:", x.grad.norm().item())
