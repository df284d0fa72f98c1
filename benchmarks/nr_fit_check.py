"""Can a model fit a few pictures it trains on? The checks behind the NR diagnosis in
docs/default-models.md (ours, 2026-11-28).

* ``crops``: four scikit-image crops (128 px), sharp (target 0.9) and Gaussian-blurred
  (sigma 3, target 0.1), one full batch, AdamW, 150 steps; the compact model from random
  initialisation with BatchNorm calibrated on the batch. Prints the loss and the 8 scores.
* ``pictures``: 12 scikit-image pictures at 160 px, Gaussian blur and JPEG at 5 levels plus
  each pristine picture, the default-model recipe otherwise (128 px crops, batch 16, 40
  epochs, one cosine); 11 pictures train. Prints the figures of synthetic_eval on all 12.
  ``--train-batchnorm``: BatchNorm trains instead of staying frozen; ``--recalibrate-batchnorm``:
  the ``--init-backbone``'s BatchNorm statistics are measured anew on these pictures.

    .venv/bin/python benchmarks/nr_fit_check.py crops --mode nr --lr 1e-3
    .venv/bin/python benchmarks/nr_fit_check.py pictures --mode nr --lr 3e-4 [--init-backbone FR.safetensors]
    .venv/bin/python benchmarks/nr_fit_check.py pictures --mode nr --lr 3e-4 --init-backbone FR.safetensors \
        --recalibrate-batchnorm
    .venv/bin/python benchmarks/nr_fit_check.py pictures --mode nr --lr 3e-4 --train-batchnorm
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

PICTURES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "retina",
            "brick", "grass", "gravel", "hubble_deep_field")  # fmt: skip


def fit_crops(mode: str, lr: float, steps: int = 150) -> None:
    from skimage import data, filters

    from bpclip_core.training import TrainConfig
    from bpclip_core.training.trainer import build_model, calibrate_batchnorm, parameter_groups

    crops = [getattr(data, name)()[:128, :128] / 255.0 for name in ("astronaut", "coffee", "chelsea", "rocket")]
    blurred = [np.stack([filters.gaussian(c[..., k], 3) for k in range(3)], -1) for c in crops]
    images = torch.tensor(np.stack(crops + blurred), dtype=torch.float32).permute(0, 3, 1, 2)
    references = torch.tensor(np.stack(crops * 2), dtype=torch.float32).permute(0, 3, 1, 2) if mode == "fr" else None
    targets = torch.tensor([0.9] * 4 + [0.1] * 4)
    torch.manual_seed(0)
    config = TrainConfig(dataset="csv", dataset_root="-", model="compact", mode=mode, pretrained=False)
    model = build_model(config, mode).train()
    calibrate_batchnorm(model.backbone, [images])
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=lr)
    for step in range(steps + 1):
        scores = model(images, references).score
        loss = ((scores - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 30 == 0:
            print(f"step {step:3d}  loss {float(loss):.4f}  scores {scores.detach().numpy().round(3)}", flush=True)


def fit_pictures(
    mode: str,
    lr: float,
    init_backbone: str | None,
    train_batchnorm: bool = False,
    epochs: int = 40,
    recalibrate_batchnorm: bool = False,
) -> None:
    from bpclip_core.checkpoint import load_checkpoint
    from bpclip_core.data.content import write_skimage_squares
    from bpclip_core.data.readers import read_csv_dataset
    from bpclip_core.data.synthetic import synthesize_dataset
    from bpclip_core.training import TrainConfig, train
    from bpclip_core.training.synthetic_eval import evaluate_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pristine = write_skimage_squares(work / "pristine", 160, PICTURES)
        types = ["gaussian_blur", "jpeg"]
        csv = synthesize_dataset(pristine, work / "synthetic", types, size=160, include_pristine=True)
        config = TrainConfig(
            dataset="csv", dataset_root=str(csv), model="compact", mode=mode, pretrained=False, epochs=epochs,
            batch_size=16, patch_size=128, lr=lr, weight_decay=0.05, t_max=0, seed=0, split_ratios=[0.92, 0.0, 0.08],
            cache_images=True, progress=False, out_dir=str(work / "run"), init_backbone=init_backbone,
            train_batchnorm=train_batchnorm, recalibrate_batchnorm=recalibrate_batchnorm,
        )  # fmt: skip
        result = train(config)
        figures = evaluate_synthetic(load_checkpoint(result.best_checkpoint), read_csv_dataset(csv))
    losses = [row["train_loss"] for row in result.history]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    print(json.dumps(figures["overall"]))
    for name, row in figures["per_type"].items():
        print(f"{name:14s} monotonicity {row['monotonicity']:.3f}  AUC {row['auc']:.3f}  SRCC {row['srcc']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("crops", "pictures"))
    parser.add_argument("--mode", choices=("nr", "fr"), default="nr")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-backbone", help="pictures: start from this checkpoint's backbone")
    parser.add_argument("--train-batchnorm", action="store_true", help="pictures: BatchNorm trains (not frozen)")
    parser.add_argument(
        "--recalibrate-batchnorm", action="store_true", help="pictures: measure the --init-backbone's statistics anew"
    )
    args = parser.parse_args()
    if args.check == "crops":
        fit_crops(args.mode, args.lr)
    else:
        recalibrate = args.recalibrate_batchnorm
        fit_pictures(args.mode, args.lr, args.init_backbone, args.train_batchnorm, recalibrate_batchnorm=recalibrate)


if __name__ == "__main__":
    main()
