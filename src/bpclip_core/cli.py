"""The ``bpclip`` command: ``init-checkpoint``, ``score``, ``info``, ``fiftyone install``,
``pyiqa convert``, and the training commands ``train``, ``evaluate``, ``splits`` and
``synthesize`` (:mod:`bpclip_core.training.cli`).

Parsing imports no torch: ``--help`` and argument errors answer at once; each command
imports what it needs when it runs (measured by ``benchmarks/bench_startup.py``).

Exit codes (also in ``bpclip --help``): 0 everything worked; 1 some inputs failed (each
reported, the rest still scored and written); 2 usage errors (bad arguments, an output that
cannot be written, no model or device to score with), found before any scoring; 3 an
internal error (a bug: printed with its traceback); 4 the output could not be written during
the run (e.g. a full disk); 130 interrupted (Ctrl-C). Rows are written as they are scored;
``--output`` is written to a temporary file beside it and atomically replaces it at the end
(after Ctrl-C or an internal error: the rows scored so far, still a valid file).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import math
import os
import sys
import tempfile
import textwrap
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

# Only light modules here: parsing arguments (--help, usage errors) must not import torch,
# open_clip or the engine; each command imports what it needs when it runs.
from .choices import ATTENTION_BACKENDS, DEFAULT_ATTENTION, PRECISIONS, PROTOCOLS
from .config import MODES, PRESETS
from .errors import BPCLIPError

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES_HELP = (
    "exit codes: 0 all inputs scored; 1 some inputs failed (each reported, the rest scored and "
    "written); 2 usage error (found before scoring); 3 internal error; 4 the output could not be "
    "written during the run; 130 interrupted"
)


class UsageError(Exception):
    """A mistake in how the command was called."""


class OutputError(Exception):
    """The results could not be written during the run (e.g. a full disk)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpclip", description="BPCLIP image quality assessment", epilog=EXIT_CODES_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init-checkpoint", help="write a checkpoint of an untrained model")
    init.add_argument("--config", choices=sorted(PRESETS), default="paper", help="model size preset")
    init.add_argument("--mode", choices=MODES, default="nr", help="no-reference or full-reference")
    init.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.safetensors)")
    init.add_argument("--random", action="store_true", help="random initialisation: needs no weight files")
    init.add_argument("--download", action="store_true", help="allow downloading missing ImageNet/CLIP weights")
    init.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")

    score = sub.add_parser("score", help="score images (files or folders)", epilog=EXIT_CODES_HELP)
    score.add_argument("paths", nargs="+", help="image files or folders")
    score.add_argument(
        "--ref", help="reference image or folder (FR; pairs matched by relative path, then by a unique file name)"
    )
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
    score.add_argument(
        "--output", type=Path, help="write results to this file instead of stdout (checked before scoring)"
    )
    score.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse image files larger than this many pixels, checked before decoding "
        "(default: BPCLIP_MAX_PIXELS or 150000000)",
    )
    score.add_argument("--top-k", type=int, default=3, help="dominant adjectives to report")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    info = sub.add_parser("info", help="the model, checkpoint and where weights are looked for")
    info.add_argument("--checkpoint", help="checkpoint path or cache name to describe")
    fiftyone = sub.add_parser("fiftyone", help="FiftyOne integration")
    fiftyone_sub = fiftyone.add_subparsers(dest="fiftyone_command", required=True)
    install = fiftyone_sub.add_parser("install", help="make the @bpclip/quality plugin visible to FiftyOne")
    install.add_argument("--plugins-dir", help="FiftyOne's plugins folder (default: FIFTYONE_PLUGINS_DIR)")
    install.add_argument("--copy", action="store_true", help="copy the plugin instead of linking it")
    pyiqa = sub.add_parser("pyiqa", help="pyiqa integration")
    pyiqa_sub = pyiqa.add_subparsers(dest="pyiqa_command", required=True)
    convert = pyiqa_sub.add_parser(
        "convert",
        help="turn pyiqa's trainer output (net_*.pth) into a bpclip checkpoint",
        description="Convert the net_*.pth that pyiqa's trainer wrote for BPCLIPArch into a .safetensors "
        "checkpoint with its card (read with torch.load(weights_only=True): only tensors, nothing unpickled).",
    )
    convert.add_argument("net", type=Path, help="experiments/<name>/models/net_<iter>.pth from pyiqa's trainer")
    convert.add_argument(
        "--init", required=True, help="the checkpoint the training started from (network: checkpoint: in the options)"
    )
    convert.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.safetensors)")
    convert.add_argument("--key", help="the state-dict entry to read (default: params_ema if present, else params)")
    convert.add_argument(
        "--mos-range",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="the MOS range the training normalised with (mos_range in the dataset options)",
    )
    convert.add_argument("--name", help="the model's name in its card (default: the output file's stem)")
    parser.set_defaults(training_handlers=_add_training_commands(sub))
    return parser


def _add_training_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """The training subcommands, from :mod:`bpclip_core.training.cli` without running its
    package's ``__init__`` (which imports the trainer and torch); its handlers import the
    rest of the package when they run."""
    name = "bpclip_core.training.cli"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("training") / "cli.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module.add_training_commands(sub)


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
        "pyiqa": _pyiqa,
        **args.training_handlers,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"bpclip {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, BPCLIPError, ValueError) as exc:
        message = getattr(exc, "command_message", str(exc))  # the fix named with the command's flags
        print(f"bpclip {args.command}: error: {display_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as exc:
        print(f"bpclip {args.command}: error: {display_line(str(exc))}", file=sys.stderr)
        return EXIT_OUTPUT
    except Exception as exc:  # a bug: its own exit code, never 1 ("some inputs failed")
        traceback.print_exc(file=sys.stderr)
        print(
            f"bpclip {args.command}: internal error ({type(exc).__name__}); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _init_checkpoint(args: argparse.Namespace) -> int:
    from .checkpoint import init_checkpoint

    path = init_checkpoint(
        args.config, args.mode, args.out, random=args.random, allow_download=args.download, seed=args.seed
    )
    kind = "random" if args.random else "pretrained backbone + CLIP text"
    print(f"wrote untrained BPCLIP-{args.mode.upper()} ({args.config}, {kind} initialisation) to {path}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from .engine import QualityEngine, _progress_bar, expand_inputs, is_empty_folder, pick_device
    from .protocol import TestTimeProtocol

    if args.top_k < 1 or args.batch_size < 1:
        raise UsageError("--top-k and --batch-size must be at least 1")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    pick_device(args.device)  # an unknown or absent device is a usage error, before any work
    sources = expand_inputs(args.paths)
    if all(is_empty_folder(s) for s in sources):
        raise UsageError(f"no images found in {args.paths}")
    if args.ref is not None and not Path(args.ref).exists():
        raise UsageError(f"--ref {args.ref!r} is neither a file nor a folder")
    width = max(len("image"), *(len(display_line(str(s))) for s in sources))
    writer = ResultWriter(args.format, args.output, width)  # a bad --output fails here, before scoring
    try:
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
            max_pixels=args.max_pixels,
        )
        if args.ref is None and engine.mode == "fr":
            raise UsageError("this is a full-reference checkpoint: pass reference images with --ref")
        size = args.size or engine.protocol.size
        engine.protocol = TestTimeProtocol(args.protocol, size=size, num_crops=args.num_crops)
        print(f"model: {engine.description}; device {engine.device}", file=sys.stderr)
        failed, total, bar = [], 0, None
        try:
            # the raw paths, not the expanded list: FR pairing needs the folder each file was found in
            for total, chunk in engine.iter_scores(args.paths, args.ref):
                if bar is None:
                    bar = _progress_bar(not args.no_progress, total)
                results = [result for _, result in chunk]
                writer.write(results)
                failed.extend(r for r in results if r.error)
                bar(len(results))
        finally:
            if bar is not None:
                bar(0, close=True)
    except (UsageError, BPCLIPError, ValueError):
        if writer.rows:  # found after some rows were scored: keep them
            writer.finish(interrupted=True)
        else:  # e.g. no reference matches any input: nothing ran, the output is left as it was
            writer.abort()
        raise
    except BaseException:  # Ctrl-C or a bug: the output holds what was scored so far, a valid file
        writer.finish(interrupted=True)
        raise
    writer.finish()
    for r in failed:
        message = r.error if r.error.startswith(r.path) else f"{r.path}: {r.error}"
        print(f"failed: {display_line(message)}", file=sys.stderr)
    print(f"scored {writer.rows - len(failed)} of {writer.rows} inputs", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def display_text(text: str) -> str:
    """``text`` as valid Unicode: undecodable file-name bytes (surrogate escapes) become ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def display_line(text: str) -> str:
    """:func:`display_text` on one line: newlines and other control characters escaped."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in display_text(text)
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class ResultWriter:
    """Writes result rows in one format as they come: to stdout, or to ``output`` through a
    temporary file beside it that atomically replaces it at the end.

    Checks at construction that the output can be written (raises :class:`UsageError`).
    File names are written as valid UTF-8 (:func:`display_text`); the table escapes control
    characters; JSON is strict (no NaN).
    """

    HEADER = ("path", "reference", "score", "mos", "top_adjectives", "error")

    def __init__(self, fmt: str, output: Path | None, width: int = 5) -> None:
        self.fmt, self.output, self.width = fmt, output, width
        self.rows = self._json_rows = 0
        self._temp: Path | None = None
        self._stream: IO[str] = sys.stdout
        if output is not None:
            self._stream = self._open(output)
        self._csv = csv.writer(self._stream) if fmt == "csv" else None
        self._write_text(self._header())

    def _open(self, output: Path) -> IO[str]:
        if output.is_dir():
            raise UsageError(f"--output {output} is a folder; name a file to write")
        if output.exists() and not output.is_file():  # a FIFO or device (/dev/null): written directly
            try:
                return output.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise UsageError(f"--output {output} cannot be written: {exc.strerror or exc}") from exc
        if output.exists() and not os.access(output, os.W_OK):
            raise UsageError(f"--output {output} is not writable")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
        except OSError as exc:
            raise UsageError(f"--output {output} cannot be written: {exc.strerror or exc}") from exc
        self._temp = Path(temp)
        from .checkpoint import new_file_mode

        # mkstemp makes it 0600: keep the mode of the file it replaces, else the usual one (umask)
        mode = output.stat().st_mode & 0o7777 if output.exists() else new_file_mode()
        os.chmod(temp, mode)
        return os.fdopen(fd, "w", encoding="utf-8", newline="")

    def _header(self) -> str:
        if self.fmt == "json":
            return "["
        if self.fmt == "csv":
            self._csv.writerow(self.HEADER)
            return ""
        return f"{'image':<{self.width}}  {'score':>7}  dominant adjectives\n"

    def _write_text(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except OSError as exc:
            self.abort()
            where = "stdout" if self.output is None else f"--output {self.output} ({self.output} left unchanged)"
            raise OutputError(f"cannot write the results to {where}: {exc.strerror or exc}") from exc

    def write(self, results: list) -> None:
        """Write the rows of some results and flush them."""
        if self.fmt == "csv":
            for r in results:
                self._csv.writerow(self._csv_row(r))
            self._write_text("")
        else:
            self._write_text("".join(self._row(r) for r in results))
        self.rows += len(results)

    def _row(self, r: Any) -> str:
        if self.fmt == "json":
            row = {
                "path": display_text(r.path),
                "reference": None if r.reference is None else display_text(r.reference),
                "score": _finite(r.score),
                "mos": _finite(r.mos),
                "top_adjectives": [{"adjective": w, "probability": _finite(p)} for w, p in r.top_adjectives],
                "dimensions": {k: _finite(v) for k, v in r.dimensions.items()},
                "error": None if r.error is None else display_text(r.error),
            }
            text = textwrap.indent(json.dumps(row, indent=2, allow_nan=False), "  ")
            separator = ",\n" if self._json_rows else "\n"
            self._json_rows += 1
            return separator + text
        shown = f"{r.score:7.4f}  {_adjectives(r)}" if r.error is None else f"{'-':>7}  error: {display_line(r.error)}"
        return f"{display_line(r.path):<{self.width}}  {shown}\n"

    def _csv_row(self, r: Any) -> list[str]:
        reference = "" if r.reference is None else display_text(r.reference)
        error = "" if r.error is None else display_text(r.error)
        return [display_text(r.path), reference, _num(r.score), _num(r.mos), _adjectives(r), error]

    def finish(self, interrupted: bool = False) -> None:
        """Complete the output (a valid file with the rows written so far) and put it in place."""
        try:
            if self.fmt == "json":
                self._stream.write("\n]\n" if self.rows else "]\n")
            self._stream.flush()
            if self._stream is not sys.stdout:
                self._stream.close()
            if self._temp is not None:
                os.replace(self._temp, self.output)
                self._temp = None
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write --output {self.output}: {exc.strerror or exc}") from exc
        if interrupted and self.output is not None:
            print(f"wrote the {self.rows} results scored so far to {display_line(str(self.output))}", file=sys.stderr)

    def abort(self) -> None:
        """Discard the temporary file; the output is left as it was."""
        if self._stream is not sys.stdout:
            with contextlib.suppress(OSError):
                self._stream.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def _adjectives(r: Any) -> str:
    return ", ".join(f"{w} ({p:.2f})" for w, p in r.top_adjectives)


def _num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6f}"


def _fiftyone(args: argparse.Namespace) -> int:
    try:
        from bpclip_plugins.fiftyone import PLUGIN_NAME, install_plugin
    except ImportError as exc:
        raise UsageError(f"FiftyOne is not installed: pip install 'bpclip[fiftyone]' ({exc})") from exc
    target = install_plugin(args.plugins_dir, copy=args.copy)
    how = "copied" if args.copy else "linked"
    print(f"{PLUGIN_NAME} {how} to {target}; restart the FiftyOne App to see 'BPCLIP: compute image quality'")
    return EXIT_OK


def _pyiqa(args: argparse.Namespace) -> int:
    from bpclip_plugins.pyiqa import convert_pyiqa_checkpoint

    path = convert_pyiqa_checkpoint(args.net, args.init, args.out, args.key, args.mos_range, args.name)
    print(f"wrote {path} (trained with pyiqa, from {args.net}); score with: bpclip score IMAGES --checkpoint {path}")
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
        print(f"checkpoint: none found ({exc.command_message})")
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
