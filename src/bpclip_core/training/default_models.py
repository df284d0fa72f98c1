"""Rebuild the bundled default models from nothing: content, labels, training, figures, export.

``python -m bpclip_core.training.default_models`` (what ``scripts/train_default_models.sh``
runs) does, in a work folder (default ``data/default-models``), each step cached or resumable:

1. the pristine references from the package registries (:mod:`bpclip_core.data.content`),
   split by picture into training and held-out references;
2. the pseudo-MOS table, calibrated with FR measures on training references only
   (:mod:`bpclip_core.data.pseudo_mos`);
3. a synthetic FR dataset of both parts (each training reference gets a seeded subset of the
   realistic types, each held-out reference every type; all levels; pristine items too) and
   a split file: train = the training references' items, test = the held-out ones;
4. training (``bpclip train``'s trainer, resumable: rerun the same command after a kill):
   each model from random initialisation (FR at lr 1e-3; NR at 3e-4, the rate at which it can
   fit blur at all, then a warm restart; docs/default-models.md says how that was found);
5. the figures on held-out references (:mod:`bpclip_core.training.synthetic_eval`);
6. the fp16 checkpoint with its model card, written to ``src/bpclip_core/models/``, its feature
   scale first divided by a power of two where its activations would overflow float16
   (:mod:`bpclip_core.feature_scale`: the same function, safe under fp16 autocast).

Deterministic for a seed on one device and thread count. ``--scale big`` (e.g. with
``--device cuda``) uses more content, steps and resolution.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.content import build_content
from ..data.synthetic import REALISTIC

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "models"
STATEMENT = (
    "Trained by the bpclip project from random initialisation on SYNTHETIC distortions of freely "
    "licensed pictures, with pseudo-MOS labels computed from full-reference measures. It never saw "
    "a human quality rating and it is NOT the BPCLIP paper's weights (none are published)."
)


RANKING_GROUP = 4  # versions of one picture per run in a batch (the ranking cycle)
RANKING_LR = 5e-4
# peak learning rates: an NR model from random initialisation cannot fit blur at 1e-3 (its loss
# stays flat) but does at 3e-4 (benchmarks/nr_fit_check.py; the paper also trains NR lower than FR)
PEAK_LR = {"fr": 1e-3, "nr": 3e-4}


@dataclass(frozen=True)
class Scale:
    """The sizes of one recipe."""

    reference_size: int
    patch_size: int
    image_size: int
    types_per_reference: dict[str, int]  # distortion types per training reference
    epochs: dict[str, int]
    num_procedural: int
    max_crops: int
    batch_size: int
    second_cycle: dict[str, int]  # epochs of a warm restart (a second cosine from half the peak lr)
    ranking_cycle: dict[str, int]  # epochs of a last cycle with the within-picture ranking loss
    min_crops: dict[str, int]  # small registry pictures get augmented crops up to this many (0: none)
    num_scenes: dict[str, int]  # photograph-like procedural training pictures (content.photo_scene)

    def content_folders(self, mode: str) -> tuple[str, str]:
        """The work folder's (content, synthetic) subfolders of ``mode``: wider content has its own."""
        parts = [f"min{self.min_crops[mode]}"] * bool(self.min_crops[mode])
        parts += [f"scenes{self.num_scenes[mode]}"] * bool(self.num_scenes[mode])
        if not parts:
            return "content", "synthetic"
        return f"content-{'-'.join(parts)}", f"synthetic-{'-'.join(parts)}-types{self.types_per_reference[mode]}"


SCALES: dict[str, Scale] = {
    # the shipped models, on two cores (2-core CPU): FR about 101 min, NR about 94 min; the recipes tried
    # and not shipped (ranking cycles, wider content, scenes), with their figures: docs/default-models.md
    "cpu": Scale(
        reference_size=160, patch_size=128, image_size=160, types_per_reference={"nr": 10, "fr": 10},
        epochs={"nr": 6, "fr": 4}, num_procedural=60, max_crops=12, batch_size=16, second_cycle={"nr": 12, "fr": 6},
        ranking_cycle={"nr": 0, "fr": 0}, min_crops={"nr": 0, "fr": 0}, num_scenes={"nr": 0, "fr": 0},
    ),
    # a bigger run, one flag away, for a GPU
    "big": Scale(
        reference_size=320, patch_size=256, image_size=320,
        types_per_reference={"nr": len(REALISTIC), "fr": len(REALISTIC)}, epochs={"nr": 30, "fr": 20},
        num_procedural=400, max_crops=48, batch_size=32, second_cycle={"nr": 10, "fr": 0},
        ranking_cycle={"nr": 0, "fr": 0}, min_crops={"nr": 0, "fr": 0}, num_scenes={"nr": 0, "fr": 0},
    ),
    # seconds, for tests of this pipeline (its NR content is the wider kind, to test that path)
    "smoke": Scale(
        reference_size=64, patch_size=48, image_size=64, types_per_reference={"nr": 3, "fr": 3},
        epochs={"nr": 1, "fr": 1}, num_procedural=4, max_crops=2, batch_size=8, second_cycle={"nr": 1, "fr": 0},
        ranking_cycle={"nr": 1, "fr": 0}, min_crops={"nr": 3, "fr": 0}, num_scenes={"nr": 2, "fr": 0},
    ),
}


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _log(message: str) -> None:
    print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare_dataset(
    work: Path, scale: Scale, seed: int, debian: bool = True, mode: str = "fr"
) -> tuple[Path, Path, dict]:
    """Steps 1-3 for ``mode``: returns (dataset CSV, split file, provenance of the data). The pseudo-MOS
    table is calibrated once, on the plain content's training references, and shared by both modes."""
    from ..data.pseudo_mos import PseudoMOSTable, calibrate_files
    from ..data.readers import read_csv_dataset
    from ..data.splits import official_split, save_splits
    from ..data.synthetic import synthesize_dataset
    from ..images import find_images

    content_name, synthetic_name = scale.content_folders(mode)
    manifests = {}
    wider = {"content": (0, 0), content_name: (scale.min_crops[mode], scale.num_scenes[mode])}
    for name, (min_crops, num_scenes) in wider.items():
        _log(f"content: building the references in {work / name}")
        manifests[name] = build_content(
            work / name, scale.reference_size, seed, num_procedural=scale.num_procedural, max_crops=scale.max_crops,
            debian=debian, min_crops=min_crops, num_scenes=num_scenes,
        )  # fmt: skip
    manifest, content_dir = manifests[content_name], work / content_name
    table_path = work / "pseudo_mos.json"
    if table_path.is_file():
        table = PseudoMOSTable.load(table_path)
    else:
        _log("pseudo-MOS: calibrating on training references")
        table = calibrate_files(find_images([work / "content" / "train"]), REALISTIC, seed=seed)
        table.save(table_path)
    data_dir = work / synthetic_name
    csv_path, split_path = data_dir / "default-models.csv", data_dir / "split.json"
    if not csv_path.is_file():
        parts = {}
        for part, per_ref in (("train", scale.types_per_reference[mode]), ("heldout", None)):
            _log(f"synthesize: {part} references")
            parts[part] = synthesize_dataset(
                content_dir / part, data_dir / part, REALISTIC, seed=seed, labels=table,
                types_per_reference=per_ref, include_pristine=True,
            )  # fmt: skip
        rows, names = [], {"train": [], "heldout": []}
        for part, part_csv in parts.items():
            with part_csv.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    row["image"], row["ref"] = f"{part}/{row['image']}", f"{part}/{row['ref']}"
                    rows.append(row)
                    names[part].append(Path(row["image"]).name)
        partial = data_dir / ".default-models.partial.csv"
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["image", "mos", "ref", "distortion", "level"])
            writer.writeheader()
            writer.writerows(rows)
        dataset = read_csv_dataset(partial, name=csv_path.stem)
        save_splits(official_split(dataset, {"train": names["train"], "test": names["heldout"]}), split_path)
        partial.replace(csv_path)
    provenance = {
        "sources": manifest["sources"],
        "heldout_pictures": manifest["heldout_pictures"],
        "train_references": manifest["train_references"],
        "heldout_references": manifest["heldout_references"],
        "augmented_crops_up_to": scale.min_crops[mode],
        "photo_like_scenes": scale.num_scenes[mode],
        "types_per_training_reference": scale.types_per_reference[mode],
        "reference_size": scale.reference_size,
        "distortions": list(REALISTIC),
        "pseudo_mos": "1 + 4 / (1 + (D / D50)^1.5), D = (1 - MS-SSIM luma) + CIEDE2000 / 60, "
        "mean per (type, level) over training references (bpclip_core/data/pseudo_mos.py)",
        "pseudo_mos_table": table.to_dict(),
    }
    return csv_path, split_path, provenance


def train_config(mode: str, csv_path: Path, split_path: Path, out: Path, scale: Scale, seed: int, device: str):
    """Step 4's recipe (our departures from the paper: see docs/default-models.md)."""
    from .config import TrainConfig

    return TrainConfig(
        dataset="csv", dataset_root=str(csv_path), splits_file=str(split_path), model="compact", mode=mode,
        model_overrides={"image_size": scale.image_size}, pretrained=False, epochs=scale.epochs[mode],
        batch_size=scale.batch_size, patch_size=scale.patch_size, lr=PEAK_LR[mode], weight_decay=0.05, t_max=0,
        schedule="cosine-epoch",
        adjective_loss_weight=0.1, seed=seed, cache_images=True,
        eval_batch_size=64, device=device, out_dir=str(out), progress=False,
    )  # fmt: skip


def probe_references(content_dir: Path, size: int, count: int = 48) -> list[torch.Tensor]:
    """``count`` training references, evenly spaced in name order (every source), as (3, size, size) in [0, 1]."""
    from ..images import load_image, resize_short_side

    paths = sorted((content_dir / "train").glob("*.png"))
    return [resize_short_side(load_image(path), size) for path in paths[:: max(1, len(paths) // count)][:count]]


def export_model(best: Path, out: Path, card: dict[str, Any], probes: list[torch.Tensor]) -> Path:
    """Step 6: the checkpoint in fp16 (text anchors included) with ``card`` merged into its provenance,
    its feature scale first fitted to float16's range on ``probes`` (:mod:`bpclip_core.feature_scale`)."""
    from safetensors.torch import save_file

    from ..checkpoint import METADATA_KEY, checkpoint_metadata, load_checkpoint
    from ..feature_scale import FP16_SAFE_PEAK, half_precision_factor, peak_activation, probe_images, rescale_features

    model = load_checkpoint(best)
    batches = probe_images(probes)
    before = peak_activation(model, batches)
    factor = half_precision_factor(before)
    rescale_features(model, factor)
    feature_scale = {
        "divided_by": factor, "peak_before": round(before, 1), "peak_after": round(peak_activation(model, batches), 1),
        "target_peak": FP16_SAFE_PEAK, "probes": f"{len(probes)} training references + 4 synthetic extremes",
    }  # fmt: skip
    model.card.provenance = {**model.card.provenance, **card, "feature_scale": feature_scale}
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    save_file(tensors, str(partial), metadata={METADATA_KEY: json.dumps(checkpoint_metadata(model))})
    partial.chmod(0o644)  # package data: readable by everyone
    partial.replace(out)
    return out


# how a run's test part is scored: no cycle keeps its best epoch by it, so it changes no weight
_EVALUATION_ONLY = frozenset({"eval_protocol", "eval_num_crops"})


def _cycle(config) -> dict[str, Any]:
    """One training cycle as the model card lists it (``recipe`` holds the last cycle's whole config)."""
    return {
        "epochs": config.epochs, "lr": config.lr, "init_checkpoint": config.init_checkpoint,
        "group_size": config.group_size, "ranking_loss_weight": config.ranking_loss_weight,
        "out_dir": Path(config.out_dir).name,
    }  # fmt: skip


def _train_once(config, run_dir: Path, message: str) -> None:
    """Train unless the run folder holds a finished run; resume an interrupted one. A folder left
    by another recipe (e.g. an older version of this one) is refused, never reused."""
    from .trainer import RESUME_NAME, train

    saved = run_dir / "train_config.json"
    if saved.is_file():
        stored = json.loads(saved.read_text())
        changed = list(config.differences(stored, ignore=_EVALUATION_ONLY))
        if stored.get("epochs") != config.epochs:  # resume-neutral for the trainer, but they shape each cosine
            changed.append("epochs")
        if changed:
            raise SystemExit(
                f"{run_dir} holds a run of another recipe ({', '.join(changed)} differ): "
                "move it aside or use another --work folder"
            )
    if (run_dir / "log.csv").is_file() and (run_dir / "report").is_dir():
        return
    _log(f"{message} in {run_dir} (rerun to resume after a kill)")
    train(config, resume=(run_dir / RESUME_NAME).is_file())


def rebuild_command(
    mode: str, scale_name: str, ranking_epochs: int | None = None, restart_epochs: int | None = None
) -> str:
    """The command line that rebuilds this model, cycle overrides included (the card's ``command``)."""
    command = f"bash scripts/train_default_models.sh --mode {mode}"
    command += f" --scale {scale_name}" if scale_name != "cpu" else ""
    command += f" --restart-epochs {restart_epochs}" if restart_epochs is not None else ""
    return command + (f" --ranking-epochs {ranking_epochs}" if ranking_epochs is not None else "")


def run(
    mode: str,
    work: Path,
    scale_name: str,
    seed: int,
    device: str,
    export_dir: Path | None,
    debian: bool = True,
    ranking_epochs: int | None = None,
    restart_epochs: int | None = None,
) -> dict[str, Any]:
    """All steps for one mode; returns the held-out figures (``ranking_epochs``, ``restart_epochs``:
    override the scale's ranking cycle or warm restart of ``mode``)."""
    from ..checkpoint import load_checkpoint
    from ..data.readers import read_csv_dataset
    from ..data.splits import load_splits
    from .synthetic_eval import evaluate_synthetic, format_markdown, plot_levels
    from .trainer import BEST_NAME

    scale = SCALES[scale_name]
    if ranking_epochs is not None:
        scale = dataclasses.replace(scale, ranking_cycle={**scale.ranking_cycle, mode: ranking_epochs})
    if restart_epochs is not None:
        scale = dataclasses.replace(scale, second_cycle={**scale.second_cycle, mode: restart_epochs})
    torch.manual_seed(seed)
    csv_path, split_path, data_provenance = prepare_dataset(work, scale, seed, debian, mode)
    run_dir = work / f"run-{mode}"
    config = train_config(mode, csv_path, split_path, run_dir, scale, seed, device)
    _train_once(config, run_dir, f"train {mode.upper()}: {scale.epochs[mode]} epochs")
    cycles = [_cycle(config)]
    if scale.second_cycle[mode]:  # a warm restart: the NR model was still improving when the first cosine ended
        first = run_dir / BEST_NAME
        run_dir = work / f"run-{mode}-cycle2"
        config = config.replace(
            init_checkpoint=str(first), init_backbone=None, epochs=scale.second_cycle[mode], lr=config.lr / 2,
            out_dir=str(run_dir),
        )  # fmt: skip
        _train_once(config, run_dir, f"train {mode.upper()}, second cycle: {config.epochs} epochs from {first}")
        cycles.append(_cycle(config))
    if scale.ranking_cycle[mode]:  # within-picture ranking: the order of one picture's versions (monotonicity)
        previous = run_dir / BEST_NAME
        run_dir = work / f"run-{mode}-rank"
        config = config.replace(
            init_checkpoint=str(previous), init_backbone=None, epochs=scale.ranking_cycle[mode], lr=RANKING_LR,
            group_size=RANKING_GROUP, ranking_loss_weight=1.0, out_dir=str(run_dir),
        )  # fmt: skip
        _train_once(config, run_dir, f"train {mode.upper()}, ranking cycle: {config.epochs} epochs from {previous}")
        cycles.append(_cycle(config))
    pictures = len(data_provenance["heldout_pictures"])
    title = f"BPCLIP-{mode.upper()} default model, held-out references ({pictures} pictures)"
    figures_path = run_dir / "heldout.json"
    if figures_path.is_file() and figures_path.stat().st_mtime > (run_dir / BEST_NAME).stat().st_mtime:
        figures = json.loads(figures_path.read_text())  # measured after this run finished
    else:
        _log(f"evaluate {mode.upper()} on held-out references")
        dataset = read_csv_dataset(csv_path)
        test = dataset.subset(load_splits(split_path, dataset).splits[0].test, "heldout")
        model = load_checkpoint(run_dir / BEST_NAME, device=device)
        figures = evaluate_synthetic(model, test, device=device)
        figures_path.write_text(json.dumps(figures, indent=1))
        (run_dir / "heldout.md").write_text(format_markdown(figures, title))
        plot_levels(figures, title, run_dir / "heldout-levels.png")
    _log(f"held-out figures: {json.dumps(figures['overall'])}")
    if export_dir is not None:
        card = {
            "name": f"bpclip-{mode}",
            "bundled": True,
            "statement": STATEMENT,
            "training_data": data_provenance,
            "cycles": cycles,
            "recipe": {
                k: v for k, v in config.to_dict().items() if k not in ("dataset_root", "splits_file", "out_dir")
            },
            "seed": seed,
            "scale": scale_name,
            "commit": _git_commit(),
            "heldout_figures": figures["overall"],
            "adjective_accuracy_per_dimension": figures["adjective_accuracy_per_dimension"],
            "command": rebuild_command(mode, scale_name, ranking_epochs, restart_epochs),
        }
        probes = probe_references(work / scale.content_folders(mode)[0], scale.image_size)
        path = export_model(run_dir / BEST_NAME, export_dir / f"bpclip-{mode}.safetensors", card, probes)
        _log(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="train_default_models")
    parser.add_argument("--mode", choices=("nr", "fr", "both"), default="both")
    parser.add_argument("--work", type=Path, default=Path("data/default-models"), help="work folder (cached steps)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="cpu (default), big (GPU) or smoke")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--export-dir", type=Path, default=PACKAGE_MODELS, help="where the fp16 checkpoints go")
    parser.add_argument("--no-export", action="store_true", help="train and measure only")
    parser.add_argument("--no-debian", action="store_true", help="skip Debian's artwork (no apt-get)")
    parser.add_argument(
        "--ranking-epochs",
        type=int,
        help="epochs of a last cycle with the within-picture ranking loss, for each mode trained (0: none)",
    )
    parser.add_argument(
        "--restart-epochs",
        type=int,
        help="epochs of the warm restart at half the peak rate, for each mode trained (0: none)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = ("fr", "nr") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run(
            mode,
            args.work,
            args.scale,
            args.seed,
            args.device,
            None if args.no_export else args.export_dir,
            not args.no_debian,
            args.ranking_epochs,
            args.restart_epochs,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
