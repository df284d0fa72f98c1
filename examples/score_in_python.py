"""Score images from Python with a BPCLIP checkpoint and print their explanations.

    .venv/bin/python examples/score_in_python.py CHECKPOINT [IMAGE ...]

Without a trained checkpoint, make an untrained one first (its scores carry no meaning):
    .venv/bin/bpclip init-checkpoint --config tiny --mode nr --random --out tiny-nr.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bpclip_core.inputs.decoding import load_image, resize_short_side
from bpclip_core.running.explain import explain
from bpclip_core.weights.checkpoint import load_checkpoint


def main(checkpoint: str, paths: list[str]) -> None:
    model = load_checkpoint(checkpoint, mode="nr")
    for path in paths:
        image = resize_short_side(load_image(path), model.config.image_size)
        with torch.inference_mode():
            output = model(image.unsqueeze(0))
        (explanation,) = explain(output, model.card.adjectives, top_k=3)
        words = ", ".join(word for word, _ in explanation.top_adjectives)
        worst = min(explanation.dimensions.items(), key=lambda item: item[1].goodness)
        print(f"{path}: score {explanation.score:.3f}; {words}; weakest dimension: {worst[0]}")


if __name__ == "__main__":
    images = sys.argv[2:] or sorted(str(p) for p in (Path(__file__).parent / "images").glob("*.jpg"))
    main(sys.argv[1], images)
