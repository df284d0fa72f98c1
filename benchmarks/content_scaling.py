"""How much do more distinct pictures help the NR model? A content-scaling curve (ours).

The shipped NR model fits its training pictures nearly to the goals and generalises badly
(docs/default-models.md, "Where the shipped NR model stands"). This check asks how its
held-out figures move with the number of distinct *registry* pictures (photos, artwork) it
trains on, at equal compute: the recipe's first NR cycle (the shipped model's first 6 epochs)
is trained on nested, seeded subsets of the training part's registry pictures (every
procedural picture kept), with the epochs scaled so that each run takes about as many
optimiser steps as the full one. The held-out references are the same 40 in every run; their
figures are printed overall, for the 29 registry references and for the 11 procedural ones.

    .venv/bin/python benchmarks/content_scaling.py --threads 2 --fractions 0.25 0.5 1   # ~95 min on 2 cores
    .venv/bin/python benchmarks/content_scaling.py --plan      # the subsets, item counts and epochs only
    .venv/bin/python benchmarks/content_scaling.py --plot docs/images/nr-content-scaling.png   # after the runs

It reads the rebuild command's synthetic data (``data/default-models/synthetic``, made by
``bash scripts/train_default_models.sh``). Resumable: a run whose folder holds a finished report
is reused (delete its folder to redo it).
The run with fraction 1 is the recipe's first NR cycle itself (same items, same order).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bpclip_core.data.readers import read_csv_dataset
from bpclip_core.data.splits import Split, load_splits, save_splits
from bpclip_core.training.default_models import SCALES, train_config


def picture_of(reference: str) -> str:
    """``train/reference/gnome-wood-d__03.png`` -> ``gnome-wood-d`` (the source picture of a crop)."""
    return Path(reference).name.split("__")[0]


def is_procedural(picture: str) -> bool:
    return picture.startswith("procedural-")


def subset_split(dataset, split: Split, fraction: float, seed: int) -> tuple[Split, list[str]]:
    """The split with only ``fraction`` of the training registry pictures (a seeded, nested choice:
    a larger fraction keeps every picture of a smaller one); the test part is unchanged."""
    registry = sorted({p for i in split.train if not is_procedural(p := picture_of(dataset.items[i].content))})
    order = [registry[i] for i in np.random.default_rng(seed).permutation(len(registry))]
    kept = set(order[: max(1, math.ceil(fraction * len(registry)))])
    train = [i for i in split.train if is_procedural(p := picture_of(dataset.items[i].content)) or p in kept]
    return Split(train, list(split.val), list(split.test), split.seed, f"registry-{fraction:g}"), sorted(kept)


def held_out_figures(model, dataset, test: list[int]) -> dict[str, dict]:
    """synthetic_eval's overall figures on all held-out references, the registry ones and the procedural ones
    (the held-out items scored once)."""
    from bpclip_core.training.synthetic_eval import score_dataset, synthetic_figures

    held_out = dataset.subset(test)
    scores, goodness = score_dataset(model, held_out)
    figures = {}
    for source in ("all", "registry", "procedural"):
        chosen = [k for k, item in enumerate(held_out.items) if source == "all" or (
            is_procedural(picture_of(item.content)) == (source == "procedural"))]  # fmt: skip
        result = synthetic_figures(
            held_out.subset(chosen), scores[chosen], {name: values[chosen] for name, values in goodness.items()}
        )
        figures[source] = {**result["overall"], "references": len({held_out.items[k].content for k in chosen})}
    return figures


def plot_curve(rows: list[tuple[float, int, dict]], path: Path, mode: str = "nr") -> None:
    """Held-out monotonicity, AUC and adjective accuracy against the registry pictures trained on (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    counts = [count for _, count, _ in rows]
    panels = (("monotonicity", "monotonicity", 0.95), ("auc", "AUC pristine vs level >= 3", 0.95),
              ("adjective_balanced_accuracy", "adjective balanced accuracy", 0.8))  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), sharex=True)
    for axis, (key, title, goal) in zip(axes, panels):
        for source, style in (("all", "o-"), ("registry", "s-"), ("procedural", "^--")):
            axis.plot(counts, [result["figures"][source][key] for _, _, result in rows], style, label=source)
        axis.axhline(goal, color="grey", linestyle=":", label=f"goal {goal}")
        axis.set(xscale="log", title=f"held-out {mode.upper()} {title}", xlabel="registry pictures trained on")
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("data/default-models"))
    parser.add_argument("--data", default="synthetic", help="the synthetic data folder in --work")
    parser.add_argument("--out", type=Path, default=Path("data/content-scaling"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--mode", choices=("nr", "fr"), default="nr")
    parser.add_argument("--seed", type=int, default=0, help="the training seed and the picture choice's")
    parser.add_argument("--threads", type=int, help="torch CPU threads (the recipe's figures: 2)")
    parser.add_argument("--plan", action="store_true", help="print the subsets and epochs, train nothing")
    parser.add_argument("--plot", type=Path, help="also draw the curve to this PNG file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.work / args.data
    csv_path = data / "default-models.csv"
    dataset = read_csv_dataset(csv_path)
    splits = load_splits(data / "split.json", dataset)
    full = splits.splits[0]
    scale = SCALES["cpu"]
    rows = []
    for fraction in sorted(args.fractions):
        split, kept = subset_split(dataset, full, fraction, args.seed)
        epochs = max(1, round(scale.epochs[args.mode] * len(full.train) / len(split.train)))
        run_dir = args.out / f"{args.mode}-registry-{fraction:g}"
        print(f"fraction {fraction:g}: {len(kept)} registry pictures, {len(split.train)} training items, "
              f"{epochs} epochs ({epochs * len(split.train)} item passes): {', '.join(kept)}", flush=True)  # fmt: skip
        if args.plan:
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        split_path = save_splits(replace(splits, splits=[split]), run_dir / "split.json")
        config = replace(
            train_config(args.mode, csv_path, split_path, run_dir, scale, args.seed, "cpu"), epochs=epochs
        )
        if not (run_dir / "report").is_dir():
            from bpclip_core.training.trainer import RESUME_NAME, train

            train(config, resume=(run_dir / RESUME_NAME).is_file())
        results = run_dir / "heldout.json"
        if not results.is_file():
            from bpclip_core.checkpoint import load_checkpoint

            figures = held_out_figures(load_checkpoint(run_dir / "best.safetensors"), dataset, full.test)
            results.write_text(json.dumps({"registry_pictures": kept, "train_items": len(split.train),
                                           "epochs": epochs, "figures": figures}, indent=1))  # fmt: skip
        rows.append((fraction, len(kept), json.loads(results.read_text())))
    if rows:
        print("| registry pictures | training items | epochs | held-out: all (mono / AUC / SRCC / adj) "
              "| registry refs (mono / AUC / SRCC / adj) | procedural refs (mono / AUC / SRCC / adj) |")  # fmt: skip
        for fraction, count, result in rows:
            cells = [" / ".join(f"{result['figures'][s][k]:.3f}" for k in
                                ("monotonicity", "auc", "srcc", "adjective_balanced_accuracy"))
                     for s in ("all", "registry", "procedural")]  # fmt: skip
            head = f"| {count} ({fraction:g}) | {result['train_items']} | {result['epochs']} | "
            print(head + " | ".join(cells) + " |")
    if rows and args.plot:
        plot_curve(rows, args.plot, args.mode)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
