"""The ``bpclip`` command: ``init-checkpoint``, ``score``, ``info``, and the training commands
``train``, ``evaluate``, ``splits`` and ``synthesize`` (:mod:`bpclip_core.training.cli`).

Exit codes: 0 everything worked, 1 some inputs failed (each reported, the rest still
scored and written), 2 usage errors (bad arguments, no model to score with).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import MODES, PRESETS
from .engine import ATTENTION_BACKENDS, DEFAULT_ATTENTION, PRECISIONS
from .errors import BPCLIPError
from .protocol import PROTOCOLS
from .training.cli import add_training_commands

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpclip", description="BPCLIP image quality assessment")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init-checkpoint", help="write a checkpoint of an untrained model")
    init.add_argument("--config", choices=sorted(PRESETS), default="paper", help="model size preset")
    init.add_argument("--mode", choices=MODES, default="nr", help="no-reference or full-reference")
    init.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.safetensors)")
    init.add_argument("--random", action="store_true", help="random initialisation: needs no weight files")
    init.add_argument("--download", action="store_true", help="allow downloading missing ImageNet/CLIP weights")
    init.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")

    score = sub.add_parser("score", help="score images (files or folders)")
    score.add_argument("paths", nargs="+", help="image files or folders")
    score.add_argument("--ref", help="reference image or folder (FR; pairs matched by file name)")
    model = score.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint", help="checkpoint path or cache name (default: BPCLIP_CHECKPOINT, the cache, the bundled model)"
    )
    model.add_argument("--zero-shot", action="store_true", help="zero-shot CLIP mode: no trained BPCLIP head")
    score.add_argument("--clip-model", help="open_clip 'arch/tag' for --zero-shot (default RN50/openai)")
    score.add_argument("--download", action="store_true", help="allow downloading missing CLIP weights")
    score.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    score.add_argument("--batch-size", type=int, default=8, help="views per forward pass (default 8)")
    score.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto: bf16/fp16 on GPU, fp32 on CPU")
    score.add_argument(
        "--attention", choices=ATTENTION_BACKENDS, default=DEFAULT_ATTENTION, help="attention compilation"
    )
    score.add_argument("--protocol", choices=PROTOCOLS, default="resize", help="test-time protocol for any image size")
    score.add_argument("--size", type=int, default=None, help="protocol size in px (default: the model's image size)")
    score.add_argument("--num-crops", type=int, default=5, help="crops per image for --protocol crops")
    score.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1, at most 4)")
    score.add_argument("--format", choices=("table", "csv", "json"), default="table")
    score.add_argument("--output", type=Path, help="write results to this file instead of stdout")
    score.add_argument("--top-k", type=int, default=3, help="dominant adjectives to report")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    info = sub.add_parser("info", help="the model, checkpoint and where weights are looked for")
    info.add_argument("--checkpoint", help="checkpoint path or cache name to describe")
    fiftyone = sub.add_parser("fiftyone", help="FiftyOne integration")
    fiftyone_sub = fiftyone.add_subparsers(dest="fiftyone_command", required=True)
    install = fiftyone_sub.add_parser("install", help="make the @bpclip/quality plugin visible to FiftyOne")
    install.add_argument("--plugins-dir", help="FiftyOne's plugins folder (default: FIFTYONE_PLUGINS_DIR)")
    install.add_argument("--copy", action="store_true", help="copy the plugin instead of linking it")
    parser.set_defaults(training_handlers=add_training_commands(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bpclip`` command; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    handlers = {
        "init-checkpoint": _init_checkpoint,
        "score": _score,
        "info": _info,
        "fiftyone": _fiftyone,
        **args.training_handlers,
    }
    try:
        return handlers[args.command](args)
    except (UsageError, BPCLIPError, ValueError) as exc:
        print(f"bpclip {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _init_checkpoint(args: argparse.Namespace) -> int:
    from .checkpoint import init_checkpoint

    path = init_checkpoint(
        args.config, args.mode, args.out, random=args.random, allow_download=args.download, seed=args.seed
    )
    kind = "random" if args.random else "pretrained backbone + CLIP text"
    print(f"wrote untrained BPCLIP-{args.mode.upper()} ({args.config}, {kind} initialisation) to {path}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from .engine import QualityEngine, expand_inputs
    from .protocol import TestTimeProtocol

    if args.top_k < 1 or args.batch_size < 1:
        raise UsageError("--top-k and --batch-size must be at least 1")
    sources = expand_inputs(args.paths)
    if not sources:
        raise UsageError(f"no images found in {args.paths}")
    if args.ref is not None and not Path(args.ref).exists():
        raise UsageError(f"--ref {args.ref!r} is neither a file nor a folder")
    engine = QualityEngine.from_checkpoint(
        args.checkpoint,
        zero_shot=args.zero_shot,
        mode="fr" if args.ref else None,
        clip_model=args.clip_model,
        allow_download=args.download,
        device=args.device,
        precision=args.precision,
        attention=args.attention,
        batch_size=args.batch_size,
        num_workers=args.workers,
        top_k=args.top_k,
    )
    if args.ref is None and engine.mode == "fr":
        raise UsageError("this is a full-reference checkpoint: pass reference images with --ref")
    size = args.size or engine.protocol.size
    engine.protocol = TestTimeProtocol(args.protocol, size=size, num_crops=args.num_crops)
    print(f"model: {engine.description}; device {engine.device}", file=sys.stderr)
    results = engine.score(sources, args.ref, progress=not args.no_progress)
    text = _render(results, args.format)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"failed: {r.error if r.error.startswith(r.path) else f'{r.path}: {r.error}'}", file=sys.stderr)
    print(f"scored {len(results) - len(failed)} of {len(results)} inputs", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _render(results: list, fmt: str) -> str:
    def adjectives(r) -> str:
        return ", ".join(f"{w} ({p:.2f})" for w, p in r.top_adjectives)

    if fmt == "json":
        rows = [
            {
                "path": r.path,
                "reference": r.reference,
                "score": r.score,
                "mos": r.mos,
                "top_adjectives": [{"adjective": w, "probability": p} for w, p in r.top_adjectives],
                "dimensions": r.dimensions,
                "error": r.error,
            }
            for r in results
        ]
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "reference", "score", "mos", "top_adjectives", "error"])
        for r in results:
            writer.writerow([r.path, r.reference or "", _num(r.score), _num(r.mos), adjectives(r), r.error or ""])
        return buffer.getvalue()
    width = max(len("image"), *(len(r.path) for r in results))
    lines = [f"{'image':<{width}}  {'score':>7}  dominant adjectives"]
    for r in results:
        shown = f"{r.score:7.4f}  {adjectives(r)}" if r.error is None else f"{'-':>7}  error: {r.error}"
        lines.append(f"{r.path:<{width}}  {shown}")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _fiftyone(args: argparse.Namespace) -> int:
    try:
        from bpclip_plugins.fiftyone import PLUGIN_NAME, install_plugin
    except ImportError as exc:
        raise UsageError(f"FiftyOne is not installed: pip install 'bpclip[fiftyone]' ({exc})") from exc
    target = install_plugin(args.plugins_dir, copy=args.copy)
    how = "copied" if args.copy else "linked"
    print(f"{PLUGIN_NAME} {how} to {target}; restart the FiftyOne App to see 'BPCLIP: compute image quality'")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .checkpoint import CHECKPOINT_ENV, HOME_ENV, checkpoint_dir, read_metadata, resolve_checkpoint
    from .errors import CheckpointNotFoundError
    from .weights import hub_offline

    print(f"bpclip {__version__}, torch {torch.__version__}")
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    print(f"device: {device}")
    print(
        f"checkpoints: {CHECKPOINT_ENV}={os.environ.get(CHECKPOINT_ENV, '(unset)')}; "
        f"cache {checkpoint_dir()} ({HOME_ENV})"
    )
    print(f"ImageNet weights: {Path(torch.hub.get_dir()) / 'checkpoints'} (TORCH_HOME)")
    from huggingface_hub.constants import HF_HUB_CACHE

    print(f"CLIP weights: {HF_HUB_CACHE} (HF_HOME); HF_HUB_OFFLINE={'1' if hub_offline() else '0'}")
    try:
        path = resolve_checkpoint(args.checkpoint)
    except CheckpointNotFoundError as exc:
        print(f"checkpoint: none found ({exc})")
        return EXIT_OK if args.checkpoint is None else EXIT_USAGE
    meta = read_metadata(path)
    config = meta["config"]
    print(f"checkpoint: {path}")
    print(f"  mode {config['mode'].upper()}, backbone {config['backbone']}, text model {config['text_model']}")
    print(f"  score scale {meta['score_scale']}, library {meta['library_version']}")
    print(f"  provenance {json.dumps(meta['provenance'])}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
