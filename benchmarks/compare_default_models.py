"""The bundled models against their peers on the held-out references of the rebuild.

On the held-out part of the rebuild's synthetic dataset (pictures no model trained on; the first
``--per-picture`` references of each held-out picture, every realistic type at every level, pristine items
too; ``bpclip_core.training.default_models``), per distortion type and overall:

- NR: the bundled ``bpclip-nr``, the first bundled model (ResNet18 trained from scratch, read
  from git history) and pyiqa's training-free ``piqe``;
- FR: the bundled ``bpclip-fr``, the first bundled FR model and pyiqa's ``psnr``, ``ssim``,
  ``ms_ssim``, ``gmsd``, ``fsim`` and ``vsi`` (none needs a download);

with monotonicity, AUC pristine vs level >= 3, SRCC/PLCC against the pseudo-MOS labels and (for
the models that explain) adjective balanced accuracy (:mod:`bpclip_core.training.synthetic_eval`).
Lower-is-better metrics (piqe, gmsd) are negated first. The pseudo-MOS labels come from MS-SSIM
and CIEDE2000 (FR measures), so FR SRCC favours measures of that family: read monotonicity too.

    git show <commit>:src/bpclip_core/weights/bundled/bpclip-nr.safetensors > data/old-nr.safetensors   # (and fr)
    .venv/bin/python benchmarks/compare_default_models.py --work data/default-models \\
        --old-nr data/old-nr.safetensors --old-fr data/old-fr.safetensors --json data/compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bpclip_core.data.readers import read_csv_dataset
from bpclip_core.data.splits import load_splits
from bpclip_core.inputs.decoding import load_image
from bpclip_core.training.default_models import HELDOUT_PER_PICTURE, PACKAGE_MODELS, heldout_indices
from bpclip_core.training.synthetic_eval import format_markdown, score_dataset, synthetic_figures
from bpclip_core.weights.checkpoint import load_checkpoint

NR_PEERS = ("piqe",)
FR_PEERS = ("psnr", "ssim", "ms_ssim", "gmsd", "fsim", "vsi")


def pyiqa_scores(name: str, dataset, batch_size: int = 16) -> np.ndarray:
    """Scores of a pyiqa metric on every item, higher meaning better."""
    import pyiqa

    metric = pyiqa.create_metric(name, device="cpu", as_loss=False)
    scores = []
    with torch.inference_mode():
        for start in range(0, len(dataset.items), batch_size):
            items = dataset.items[start : start + batch_size]
            images = torch.stack([load_image(item.image) for item in items])
            if metric.metric_mode == "FR":
                output = metric(images, torch.stack([load_image(item.reference) for item in items]))
            else:
                output = metric(images)
            scores.append(output.flatten().float().numpy())
    values = np.concatenate(scores)
    return -values if metric.lower_better else values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("data/default-models"), help="the rebuild's work folder")
    parser.add_argument("--nr", type=Path, default=PACKAGE_MODELS / "bpclip-nr.safetensors")
    parser.add_argument("--fr", type=Path, default=PACKAGE_MODELS / "bpclip-fr.safetensors")
    parser.add_argument("--old-nr", type=Path, help="the first bundled NR model (from git history)")
    parser.add_argument("--old-fr", type=Path, help="the first bundled FR model (from git history)")
    parser.add_argument(
        "--per-picture", type=int, default=HELDOUT_PER_PICTURE, help="held-out references per held-out picture"
    )
    parser.add_argument("--modes", nargs="+", choices=("nr", "fr"), default=["nr", "fr"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    csv_path = args.work / "synthetic" / "default-models.csv"
    dataset = read_csv_dataset(csv_path)
    split = load_splits(args.work / "synthetic" / "split.json", dataset).splits[0]
    test = dataset.subset(heldout_indices(dataset, split.test, args.per_picture), "heldout")
    pictures = len({item.content.split("__")[0] for item in test.items})
    print(f"held-out: {len(test)} items of {pictures} pictures ({csv_path})", file=sys.stderr)
    rows: dict[str, dict[str, dict]] = {mode: {} for mode in args.modes}
    for mode, ours, old, peers in (("nr", args.nr, args.old_nr, NR_PEERS), ("fr", args.fr, args.old_fr, FR_PEERS)):
        if mode not in rows:
            continue
        for label, path in ((f"bpclip-{mode} (bundled)", ours), (f"bpclip-{mode} (first, from scratch)", old)):
            if path is None:
                continue
            start = time.perf_counter()
            rows[mode][label] = synthetic_figures(test, *score_dataset(load_checkpoint(path, mode=mode), test))
            print(f"  {label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for name in peers:
            start = time.perf_counter()
            try:
                rows[mode][f"pyiqa {name}"] = synthetic_figures(test, pyiqa_scores(name, test), {})
            except ImportError:
                print("  pyiqa not installed: its rows are left out", file=sys.stderr)
                break
            print(f"  pyiqa {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for mode, table in rows.items():
        print(f"\n### {mode.upper()}, overall ({len(test)} held-out items, {pictures} pictures)\n")
        print("| metric | monotonicity | AUC pristine vs level>=3 | SRCC | PLCC | adjective balanced accuracy |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, figures in table.items():
            o = figures["overall"]
            cells = [o["monotonicity"], o["auc"], o["srcc"], o["plcc"], o["adjective_balanced_accuracy"]]
            print(f"| {label} | " + " | ".join("-" if not np.isfinite(v) else f"{v:.3f}" for v in cells) + " |")
        print("\nMonotonicity per type:\n")
        labels = list(table)
        print("| type | " + " | ".join(labels) + " |")
        print("|---|" + "---:|" * len(labels))
        for name in next(iter(table.values()))["per_type"]:
            cells = [table[label]["per_type"][name]["monotonicity"] for label in labels]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
        ours = next(iter(table.values()))
        print("\n" + format_markdown(ours, f"{labels[0]}, every figure per type"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
