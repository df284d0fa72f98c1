"""The training subcommands of ``bpclip``: ``train``, ``evaluate``, ``splits`` and ``synthesize``.

:func:`add_training_commands` adds them to the main parser and returns their handlers;
handlers return 0 (ok), 1 (some runs failed) or 2 (usage error), like the other commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bpclip_core.choices import DEFAULT_PROTOCOL, PRECISIONS, PROTOCOLS

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]

# flag -> TrainConfig field, for the most common overrides
_TRAIN_FLAGS: dict[str, tuple[str, type]] = {
    "dataset": ("dataset", str),
    "data": ("dataset_root", str),
    "splits_file": ("splits_file", str),
    "split_index": ("split_index", int),
    "split_seed": ("split_seed", int),
    "model": ("model", str),
    "mode": ("mode", str),
    "init_checkpoint": ("init_checkpoint", str),
    "init_backbone": ("init_backbone", str),
    "epochs": ("epochs", int),
    "batch_size": ("batch_size", int),
    "patch_size": ("patch_size", int),
    "lr": ("lr", float),
    "seed": ("seed", int),
    "workers": ("num_workers", int),
    "device": ("device", str),
    "precision": ("precision", str),
    "out": ("out_dir", str),
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="training config file (YAML or JSON); flags override it")
    parser.add_argument("--dataset", help="dataset kind: live csiq tid2013 kadid10k clive koniq10k spaq csv pyiqa")
    parser.add_argument("--data", help="dataset folder (csv/pyiqa: the CSV file)")
    parser.add_argument("--splits-file", help="split file from `bpclip splits --make-only`")
    parser.add_argument("--split-index", type=int, help="which split of the split file")
    parser.add_argument("--split-seed", type=int, help="seed of the split made when no split file is given")
    parser.add_argument("--model", help="model preset: paper or tiny")
    parser.add_argument("--mode", choices=("nr", "fr"), help="default: fr when the dataset has references")
    parser.add_argument("--init-checkpoint", help="start from this checkpoint")
    parser.add_argument("--init-backbone", help="copy the backbone of this checkpoint (either mode) into the model")
    parser.add_argument("--random-init", action="store_true", help="random initialisation (no pretrained weights)")
    parser.add_argument(
        "--train-batchnorm", action="store_true", help="BatchNorm trains instead of staying frozen (for --random-init)"
    )
    parser.add_argument(
        "--recalibrate-batchnorm", action="store_true",
        help="with --init-backbone: measure the donor's BatchNorm statistics anew on the training images",
    )  # fmt: skip
    parser.add_argument("--download", action="store_true", help="allow downloading missing pretrained weights")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--patch-size", type=int, help="training crop size (paper: 384)")
    parser.add_argument("--lr", type=float, help="learning rate (paper: 1e-4 FR, 3e-5 NR)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="DataLoader processes")
    parser.add_argument("--device", help="auto, cpu, cuda ...")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA (fp16 + loss scaling without native bf16), fp32 on CPU",
    )
    parser.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    parser.add_argument("--out", help="run folder (checkpoints, logs, report)")
    parser.add_argument("--cache-images", action="store_true", help="keep decoded images in memory")
    parser.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set any TrainConfig field (repeatable)"
    )


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of a command line: the config file, then the flags, then ``--set``."""
    from bpclip_core.training.config import TrainConfig, parse_override

    overrides: dict[str, Any] = {}
    for flag, (name, _) in _TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "random_init", False):
        overrides["pretrained"] = False
    if getattr(args, "train_batchnorm", False):
        overrides["train_batchnorm"] = True
    if getattr(args, "recalibrate_batchnorm", False):
        overrides["recalibrate_batchnorm"] = True
    if getattr(args, "download", False):
        overrides["allow_download"] = True
    if getattr(args, "cache_images", False):
        overrides["cache_images"] = True
    if getattr(args, "tensorboard", False):
        overrides["tensorboard"] = True
    if getattr(args, "compile", False):
        overrides["compile"] = True
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    for text in getattr(args, "set", []):
        key, value = parse_override(text)
        overrides[key] = value
    if args.config is not None:
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig.from_dict(overrides)


def add_training_commands(subparsers: Any) -> dict[str, Handler]:
    """Add ``train``, ``evaluate``, ``splits`` and ``synthesize`` to ``bpclip``; return their handlers."""
    train = subparsers.add_parser("train", help="train a BPCLIP model (paper recipe; runs under torchrun)")
    _add_config_flags(train)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its resume checkpoint")

    evaluate = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a dataset (e.g. cross-dataset)")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint to evaluate")
    evaluate.add_argument("--dataset", required=True, help="dataset kind (see bpclip train --help)")
    evaluate.add_argument("--data", required=True, help="dataset folder (csv/pyiqa: the CSV file)")
    evaluate.add_argument("--splits-file", help="evaluate on the test part of a split (default: the whole dataset)")
    evaluate.add_argument("--split-index", type=int, default=0)
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument(
        "--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL, help="test-time protocol (as bpclip score's)"
    )
    evaluate.add_argument("--size", type=int, help="protocol size in px (default: the model's image size)")
    evaluate.add_argument("--num-crops", type=int, default=5, help="crops per image for --protocol crops")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--report", type=Path, required=True, help="report folder to write")

    splits = subparsers.add_parser("splits", help="make N seeded splits and train/test on each (mean +- std)")
    _add_config_flags(splits)
    splits.add_argument("--num-splits", type=int, default=10, help="number of random splits (paper: 10)")
    splits.add_argument("--official", action="store_true", help="KonIQ-10k: its official split instead")
    splits.add_argument("--make-only", action="store_true", help="only write the split file")
    splits.add_argument("--resume", action="store_true", help="resume unfinished splits, skip finished ones")

    synthesize = subparsers.add_parser("synthesize", help="write a KADID-like FR dataset from pristine images")
    synthesize.add_argument("pristine", nargs="?", default="", help="folder of pristine images")
    synthesize.add_argument("--out", type=Path, help="output folder (required unless --list)")
    synthesize.add_argument(
        "--distortions", help="comma-separated names, or 'realistic' (the default models' 22); default: all; see --list"
    )
    synthesize.add_argument("--levels", default="1,2,3,4,5", help="comma-separated levels of 1..5")
    synthesize.add_argument("--size", type=int, help="resize and centre-crop pristine images to SIZE x SIZE")
    synthesize.add_argument("--seed", type=int, default=0)
    synthesize.add_argument("--list", action="store_true", help="list the distortion types and exit")
    synthesize.add_argument(
        "--labels", choices=("level", "calibrated"), default="level",
        help="pseudo-MOS: 5 - 0.8 * level, or calibrated across types with FR measures (pseudo_mos.py)",
    )  # fmt: skip
    synthesize.add_argument("--pseudo-mos-table", type=Path, help="a calibrated table to reuse (JSON)")
    synthesize.add_argument("--types-per-reference", type=int, help="a seeded random subset of types per image")
    synthesize.add_argument("--include-pristine", action="store_true", help="also list each reference (level 0)")
    return {"train": _train, "evaluate": _evaluate, "splits": _splits, "synthesize": _synthesize}


def _train(args: argparse.Namespace) -> int:
    from bpclip_core.training.reports import strict_json
    from bpclip_core.training.trainer import train

    config = config_from_args(args)
    result = train(config, resume=args.resume)
    print(json.dumps(strict_json({"best_checkpoint": str(result.best_checkpoint), "test": result.test_metrics})))
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from bpclip_core.data.readers import read_dataset
    from bpclip_core.data.splits import load_splits
    from bpclip_core.training.evaluation import evaluate_checkpoint
    from bpclip_core.training.reports import strict_json, write_report

    dataset = read_dataset(args.dataset, args.data)
    indices = None
    if args.splits_file:
        split_set = load_splits(args.splits_file, dataset)
        if not 0 <= args.split_index < len(split_set.splits):
            raise ValueError(f"--split-index {args.split_index} out of range ({len(split_set.splits)} splits)")
        indices = split_set.splits[args.split_index].test
    result = evaluate_checkpoint(
        args.checkpoint, dataset, indices, args.batch_size, args.protocol, args.size, args.num_crops, args.device
    )
    metrics = result["metrics"]
    details = {
        "checkpoint": args.checkpoint,
        "trained on": result["provenance"].get("dataset", "unknown"),
        "evaluated on": dataset.name,
        "items": metrics["count"],
        "protocol": result["protocol"],
    }
    write_report(
        args.report,
        f"{details['trained on']} -> {dataset.name}",
        metrics,
        result["predictions"],
        result["mos"],
        details=details,
    )
    print(json.dumps(strict_json(metrics)))
    return EXIT_OK


def _splits(args: argparse.Namespace) -> int:
    from bpclip_core.data.readers import koniq_official_split, read_dataset
    from bpclip_core.data.splits import load_splits, make_splits, official_split, save_splits
    from bpclip_core.training.evaluation import summarise
    from bpclip_core.training.reports import write_report
    from bpclip_core.training.trainer import Trainer

    config = config_from_args(args)
    if not config.dataset_root:
        raise ValueError("give the dataset with --dataset and --data (or a --config file)")
    dataset = read_dataset(config.dataset, config.dataset_root, **config.dataset_options)
    out = Path(config.out_dir)
    split_path = Path(config.splits_file) if config.splits_file else out / "splits.json"
    if split_path.exists():
        split_set = load_splits(split_path, dataset)
    elif args.official:
        split_set = official_split(dataset, koniq_official_split(config.dataset_root))
    else:
        split_set = make_splits(dataset, args.num_splits, config.split_ratios, config.split_seed)
    if not split_path.exists():
        save_splits(split_set, split_path)
    print(f"{len(split_set.splits)} split(s) ({split_set.protocol}) in {split_path}", file=sys.stderr)
    if args.make_only:
        return EXIT_OK
    runs, failures = [], 0
    for index, split in enumerate(split_set.splits):
        run_config = config.replace(out_dir=str(out / f"split{index}"), splits_file=str(split_path), split_index=index)
        try:
            result = Trainer(run_config, dataset, split).fit(resume=args.resume)
        except Exception as exc:  # one failed split does not lose the others
            failures += 1
            print(f"split {index}: failed: {exc}", file=sys.stderr)
            continue
        if result.test_metrics:
            runs.append(result.test_metrics)
    if runs:
        summary = summarise(runs)
        details = {"dataset": dataset.name, "protocol": split_set.protocol, "splits run": len(runs)}
        write_report(out / "report", f"{dataset.name}: {len(runs)} splits", summary, details=details, per_split=runs)
        print(
            f"{dataset.name} over {len(runs)} splits: "
            f"SRCC {summary['srcc']['mean']:.4f} +- {summary['srcc']['std']:.4f}, "
            f"PLCC {summary['plcc']['mean']:.4f} +- {summary['plcc']['std']:.4f}"
        )
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _calibrated_labels(args: argparse.Namespace, distortions: list[str]):
    """A pseudo-MOS table: read from --pseudo-mos-table, or calibrated on the pristine images
    (then saved as pseudo_mos.json beside the dataset)."""
    from bpclip_core.data.pseudo_mos import PseudoMOSTable, calibrate_files
    from bpclip_core.inputs.decoding import image_files

    if args.pseudo_mos_table is not None:
        table = PseudoMOSTable.load(args.pseudo_mos_table)
        missing = sorted(set(distortions) - set(table.mos))
        if missing:
            raise ValueError(f"{args.pseudo_mos_table} has no labels for {missing}")
        return table
    table = calibrate_files(image_files([args.pristine]), distortions, args.size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {table.save(args.out / 'pseudo_mos.json')}")
    return table


def _synthesize(args: argparse.Namespace) -> int:
    from bpclip_core.data.synthetic import DISTORTIONS, HARMS, REALISTIC, synthesize_dataset

    if args.list:
        for name, (family, _) in DISTORTIONS.items():
            dimension, words = HARMS[name]
            print(f"{name:22s} {family:20s} harms {dimension}: {', '.join(words)}")
        return EXIT_OK
    if args.out is None:
        raise ValueError("--out is required: the folder to write the dataset to")
    if not Path(args.pristine).exists():
        raise ValueError(f"pristine image folder {args.pristine!r} does not exist")
    if args.distortions == "realistic":
        distortions = list(REALISTIC)
    else:
        distortions = [d.strip() for d in args.distortions.split(",")] if args.distortions else None
    try:
        levels = [int(v) for v in args.levels.split(",")]
    except ValueError:
        raise ValueError(f"--levels must be comma-separated integers, got {args.levels!r}") from None
    labels = None
    if args.pseudo_mos_table is not None or args.labels == "calibrated":
        labels = _calibrated_labels(args, distortions or list(DISTORTIONS))
    path = synthesize_dataset(
        args.pristine, args.out, distortions, levels, args.size, args.seed, labels,
        args.types_per_reference, args.include_pristine,
    )  # fmt: skip
    print(f"wrote {path}")
    return EXIT_OK
