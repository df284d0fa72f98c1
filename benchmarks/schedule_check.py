"""Which reading of the paper's "cosine annealing, T_max = 50, 200 epochs" keeps the better NR model?

NR splits have no validation part, so the kept model is the last epoch's. With torch's
CosineAnnealingLR stepped per epoch (``schedule: cosine-epoch``) the learning rate climbs
back after T_max epochs: over 4 x T_max epochs the last epoch trains at the peak. Our
reading (``schedule: restarts``) runs cycles of T_max epochs stepped per iteration, each
ending at the minimum. This script trains the same tiny model both ways under NR's split
rule (8:0:2 by picture, no validation part: the last epoch is kept), at the paper's ratio
(4 cycles: 32 epochs with t_max 8), on the learning test's synthetic data (20 scikit-image
pictures, blur and noise), and prints the kept model's test SRCC/PLCC. ``--mode fr`` (the
default) trains the FR model: a tiny NR model from random initialisation does not learn at
this scale (its loss stays flat for 32 epochs with either schedule), so it cannot tell the
schedules apart; ``--mode nr`` runs it anyway.

    .venv/bin/python benchmarks/schedule_check.py [--mode fr] [--seeds 0 1] [--epochs 32] [--t-max 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("fr", "nr"), default="fr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--t-max", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.training.conftest import write_pristine
    from tests.training.test_learning import NAMES

    from bpclip_core.data.synthetic import synthesize_dataset
    from bpclip_core.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pristine = write_pristine(work / "pristine", 144, NAMES)
        csv = synthesize_dataset(pristine, work / "synthetic", ["gaussian_blur", "gaussian_noise"], size=128)
        results: dict[str, list[tuple[float, float]]] = {"restarts": [], "cosine-epoch": []}
        for seed in args.seeds:
            for schedule in results:
                config = TrainConfig(
                    dataset="csv", dataset_root=str(csv), model="tiny", mode=args.mode, pretrained=False,
                    model_overrides={"similarity_temperature": 0.1}, epochs=args.epochs, t_max=args.t_max,
                    schedule=schedule, batch_size=16, patch_size=64, lr=1.5e-3, weight_decay=0.05, seed=seed,
                    split_seed=seed, split_ratios=[0.8, 0.0, 0.2], cache_images=True, progress=False,
                    eval_protocol="full",
                    out_dir=str(work / f"run-{schedule}-{seed}"),
                )  # fmt: skip
                metrics = train(config).test_metrics or {}
                results[schedule].append((metrics["srcc"], metrics["plcc"]))
                print(f"seed {seed} {schedule:12s} kept (last-epoch) model: test SRCC {metrics['srcc']:.3f} "
                      f"PLCC {metrics['plcc']:.3f}", flush=True)  # fmt: skip
        for schedule, values in results.items():
            srcc = [v[0] for v in values]
            print(f"{schedule:12s} mean test SRCC {statistics.mean(srcc):.3f} over seeds {args.seeds}")


if __name__ == "__main__":
    main()
