"""Recipe choices the paper leaves open, settled on synthetic data: train the same tiny model
once per variant and seed, and compare the kept model's test SRCC/PLCC.

* ``--compare schedule``: which reading of "cosine annealing, T_max = 50, 200 epochs" keeps
  the better NR model? NR splits have no validation part, so the kept model is the last
  epoch's. torch's CosineAnnealingLR stepped per epoch (``schedule: cosine-epoch``) climbs
  back after T_max epochs, so over 4 x T_max epochs the last epoch trains at the peak; our
  reading (``schedule: restarts``) runs cycles of T_max epochs stepped per iteration, each
  ending at the minimum. Run at the paper's ratio (4 cycles: 32 epochs with t_max 8).
* ``--compare temperature``: the eq. 8 softmax temperature fixed at CLIP's 0.01 (the tiny
  model's probabilities saturate at initialisation), fixed at 0.1, or learned CLIP-style
  (``learn_temperature``) from either start.

Every run uses NR's split rule (8:0:2 by picture, no validation part: the last epoch is
kept) on the learning test's synthetic data (20 scikit-image pictures, blur and noise).
``--mode fr`` (the default) trains the FR model: a tiny NR model from random initialisation
does not learn at this scale (its loss stays flat for 32 epochs), so it cannot tell the
variants apart; ``--mode nr`` runs it anyway.

    .venv/bin/python benchmarks/recipe_check.py --compare schedule|temperature [--mode fr] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# each variant: TrainConfig fields, and BPCLIPConfig fields (model_overrides), over the base recipe
VARIANTS: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "schedule": {
        "restarts": ({"schedule": "restarts"}, {"similarity_temperature": 0.1}),
        "cosine-epoch": ({"schedule": "cosine-epoch"}, {"similarity_temperature": 0.1}),
    },
    "temperature": {
        "fixed 0.01": ({}, {"similarity_temperature": 0.01}),
        "learned from 0.01": ({}, {"similarity_temperature": 0.01, "learn_temperature": True}),
        "fixed 0.1": ({}, {"similarity_temperature": 0.1}),
        "learned from 0.1": ({}, {"similarity_temperature": 0.1, "learn_temperature": True}),
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=sorted(VARIANTS), default="schedule")
    parser.add_argument("--mode", choices=("fr", "nr"), default="fr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--t-max", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the pictures of the learning test
    from tests.training.test_learning import NAMES

    from bpclip_core.data.content import write_skimage_squares
    from bpclip_core.data.synthetic import synthesize_dataset
    from bpclip_core.training import TrainConfig, train

    variants = VARIANTS[args.compare]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pristine = write_skimage_squares(work / "pristine", 144, NAMES)
        csv = synthesize_dataset(pristine, work / "synthetic", ["gaussian_blur", "gaussian_noise"], size=128)
        results: dict[str, list[float]] = {name: [] for name in variants}
        for seed in args.seeds:
            for index, (name, (fields, model_fields)) in enumerate(variants.items()):
                config = TrainConfig(
                    dataset="csv", dataset_root=str(csv), model="tiny", mode=args.mode, pretrained=False,
                    model_overrides=model_fields, epochs=args.epochs,
                    t_max=args.t_max, batch_size=16, patch_size=64, lr=1.5e-3, weight_decay=0.05, seed=seed,
                    split_seed=seed, split_ratios=[0.8, 0.0, 0.2], cache_images=True, progress=False,
                    eval_protocol="full", out_dir=str(work / f"run-{index}-{seed}"), **fields,
                )  # fmt: skip
                result = train(config)
                metrics = result.test_metrics or {}
                results[name].append(metrics["srcc"])
                learned = ""
                if model_fields.get("learn_temperature"):
                    from bpclip_core.weights.checkpoint import load_checkpoint

                    learned = f", learned temperature {float(load_checkpoint(result.best_checkpoint).temperature):.4f}"
                print(f"seed {seed} {name:18s} kept (last-epoch) model: test SRCC {metrics['srcc']:.3f} "
                      f"PLCC {metrics['plcc']:.3f}{learned}", flush=True)  # fmt: skip
        for name, srcc in results.items():
            print(f"{name:18s} mean test SRCC {statistics.mean(srcc):.3f} over seeds {args.seeds}")


if __name__ == "__main__":
    main()
