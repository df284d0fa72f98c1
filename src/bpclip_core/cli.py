"""The ``bpclip`` command: ``init-checkpoint``, ``score``, ``info``, ``fiftyone install``,
``pyiqa convert``, and the training commands ``train``, ``evaluate``, ``splits`` and
``synthesize`` (:mod:`bpclip_core.training.cli`).

Parsing imports no torch: ``--help`` and argument errors answer at once; each command
imports what it needs when it runs (measured by ``benchmarks/bench_startup.py``).

Exit codes (also in ``bpclip --help``): 0 everything worked; 1 some inputs failed (each
reported, the rest still scored and written); 2 usage errors (bad arguments, an output that
cannot be written, no model or device to score with), found before any scoring; 3 an
internal error (a bug: printed with its traceback); 4 the output could not be written during
the run (e.g. a full disk); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, as a job
scheduler stops a job: handled like Ctrl-C). Rows are written as they are scored;
``--output`` is written to a temporary file beside it and atomically replaces it at the end
(after Ctrl-C, SIGTERM or an internal error: the rows scored so far, still a valid file); a
symlinked ``--output`` is written through to its target, and an ``--output`` that is one of
the inputs is refused before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules here: parsing arguments (--help, usage errors) must not import torch,
# open_clip or the engine; each command imports what it needs when it runs.
from bpclip_core import __version__
from bpclip_core.choices import ATTENTION_BACKENDS, DEFAULT_ATTENTION, JPEG_DECODERS, PIPELINES, PRECISIONS, PROTOCOLS
from bpclip_core.errors import BPCLIPError, OutputError, UsageError
from bpclip_core.model.config import MODES, PRESETS
from bpclip_core.running.output import ResultWriter, display_line

if TYPE_CHECKING:  # for annotations only: importing them would import torch
    from bpclip_core.running.engine import QualityEngine
    from bpclip_core.running.sharding import PartWriter, TorchrunRank

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it
EXIT_CODES_HELP = (
    "exit codes: 0 all inputs scored; 1 some inputs failed (each reported, the rest scored and "
    "written); 2 usage error (found before scoring); 3 internal error; 4 the output could not be "
    "written during the run; 130 interrupted"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpclip", description="BPCLIP image quality assessment", epilog=EXIT_CODES_HELP
    )
    parser.add_argument("--version", action="version", version=f"bpclip {__version__}")
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
    score.add_argument(
        "--pipeline", choices=PIPELINES, default="auto", help="input pipeline (auto: device on CUDA, else cpu)"
    )
    score.add_argument(
        "--jpeg-decoder",
        choices=JPEG_DECODERS,
        default="auto",
        help="device pipeline: torchvision sends every JPEG to nvjpeg (auto: only those PIL decodes at full scale)",
    )
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
    info.add_argument(
        "--json", action="store_true", help="everything, machine-readable (the checkpoint's full metadata)"
    )
    info.add_argument("--provenance", action="store_true", help="also print the model's training record")
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
        with _sigterm_as_interrupt():
            return handlers[args.command](args)
    except Terminated:
        print(f"bpclip {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"bpclip {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = _exit_code(exc)
        if code == EXIT_INTERNAL:  # a bug: its own exit code, never 1 ("some inputs failed")
            traceback.print_exc(file=sys.stderr)
            print(
                f"bpclip {args.command}: internal error ({type(exc).__name__}); please report it with the traceback "
                "above",
                file=sys.stderr,
            )
        else:  # usage errors name the fix with the command's flags
            message = getattr(exc, "command_message", str(exc)) if code == EXIT_USAGE else str(exc)
            print(f"bpclip {args.command}: error: {display_line(message)}", file=sys.stderr)
        return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (how job schedulers stop a job), raised where Ctrl-C raises KeyboardInterrupt,
    so that it keeps the rows scored so far in the same way."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs (in the main thread): SIGTERM raises :class:`Terminated`; a second
    one, while the partial output is being completed, is ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _init_checkpoint(args: argparse.Namespace) -> int:
    from bpclip_core.weights.checkpoint import init_checkpoint

    path = init_checkpoint(
        args.config, args.mode, args.out, random=args.random, allow_download=args.download, seed=args.seed
    )
    kind = "random" if args.random else "pretrained backbone + CLIP text"
    print(f"wrote untrained BPCLIP-{args.mode.upper()} ({args.config}, {kind} initialisation) to {path}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from bpclip_core.running.sharding import TorchrunRank

    place = TorchrunRank.from_env()
    if place is not None:  # one process of `torchrun ... -m bpclip_core.cli score`
        return _ShardedScoring(args, place).run()
    sources = _checked_inputs(args)
    _refuse_output_over_inputs(args.output, sources, args.ref)
    writer = ResultWriter(args.format, args.output, _name_width(sources))  # a bad --output fails here, before scoring
    try:
        engine = _scoring_engine(args, args.device)
        print(f"model: {engine.description}; device {engine.device}", file=sys.stderr)
        failed = []

        def write(chunk: list) -> None:
            results = [result for _, result in chunk]
            writer.write(results)
            failed.extend(r for r in results if r.error)

        # the raw paths, not the expanded list: FR pairing needs the folder each file was found in
        _write_as_scored(engine.iter_scores(args.paths, args.ref), write, progress=not args.no_progress)
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
    return _report_scored(failed, writer.rows)


def _checked_inputs(args: argparse.Namespace) -> list:
    """``score``'s checks made before any work (raises :class:`UsageError`); the expanded inputs."""
    from bpclip_core.inputs.loading import expand_inputs, is_empty_folder
    from bpclip_core.running.engine import pick_device

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
    return sources


def _refuse_output_over_inputs(output: Path | None, sources: list, ref: str | None) -> None:
    """A :class:`UsageError` if ``--output`` is (or links to) one of the inputs or references:
    writing the results would destroy that image."""
    if output is None or not output.exists():  # a file still to be made is no input
        return
    from bpclip_core.inputs.decoding import find_images

    target = output.stat()
    references = [] if ref is None else find_images([ref])
    for source in (*sources, *references):
        if not isinstance(source, (str, Path)):
            continue
        try:
            info = os.stat(source)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino):
            raise UsageError(
                f"--output {display_line(str(output))} is one of the inputs ({display_line(str(source))}); "
                "writing the results would overwrite it: name another file"
            )


def _name_width(sources: list) -> int:
    """The width of the table's image column."""
    return max(len("image"), *(len(display_line(str(s))) for s in sources))


def _scoring_engine(args: argparse.Namespace, device: Any) -> QualityEngine:
    """The engine ``score``'s options ask for, on ``device``, with its test-time protocol."""
    from bpclip_core.inputs.protocol import TestTimeProtocol
    from bpclip_core.running.engine import QualityEngine

    engine = QualityEngine.from_checkpoint(
        args.checkpoint,
        zero_shot=args.zero_shot,
        mode="fr" if args.ref else None,
        clip_model=args.clip_model,
        allow_download=args.download,
        device=device,
        precision=args.precision,
        attention=args.attention,
        batch_size=args.batch_size,
        num_workers=args.workers,
        top_k=args.top_k,
        max_pixels=args.max_pixels,
        pipeline=args.pipeline,
        jpeg_decoder=args.jpeg_decoder,
    )
    if args.ref is None and engine.mode == "fr":
        raise UsageError("this is a full-reference checkpoint: pass reference images with --ref")
    size = args.size or engine.protocol.size
    engine.protocol = TestTimeProtocol(args.protocol, size=size, num_crops=args.num_crops)
    return engine


def _write_as_scored(scores: Iterator, write: Callable[[list], None], progress: bool) -> None:
    """Hand each chunk of ``engine.iter_scores`` to ``write`` as it comes, with a progress bar."""
    from bpclip_core.running.engine import _progress_bar

    bar = None
    try:
        for total, chunk in scores:
            if bar is None:
                bar = _progress_bar(progress, total)
            write(chunk)
            bar(len(chunk))
    finally:
        if bar is not None:
            bar(0, close=True)


def _report_scored(failed: list, rows: int) -> int:
    """Name the failed inputs and count the scored ones, on stderr; the exit code."""
    for r in failed:
        message = r.error if r.error.startswith(r.path) else f"{r.path}: {r.error}"
        print(f"failed: {display_line(message)}", file=sys.stderr)
    print(f"scored {rows - len(failed)} of {rows} inputs", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _exit_code(exc: Exception) -> int:
    """The exit code of an error: 2 usage (and any BPCLIPError/ValueError), 4 output, 3 a bug."""
    if isinstance(exc, (UsageError, BPCLIPError, ValueError)):
        return EXIT_USAGE
    return EXIT_OUTPUT if isinstance(exc, OutputError) else EXIT_INTERNAL


class _ShardedScoring:
    """``score`` as one process (rank) of a ``torchrun`` job (:mod:`bpclip_core.running.sharding`).

    Three steps, after each of which the ranks meet: every rank checks the arguments and the
    output and loads the model on its own device; every rank scores its share of the inputs
    into its part file; rank 0 merges the parts in input order into ``--output`` (or stdout)
    and prints what single-process scoring prints. When a step fails on any rank, every rank
    stops, no output is written (an existing one is left as it was) and every rank exits
    with the failed rank's code (rank 0 names it); otherwise every rank exits with rank 0's
    code (1 when some inputs failed). Without ``--output`` (or with a FIFO or a device) the
    parts go to a temporary folder on rank 0's machine, so all ranks must run there.
    """

    def __init__(self, args: argparse.Namespace, place: TorchrunRank) -> None:
        self.args, self.place = args, place
        self.regular_output = args.output is not None and (args.output.is_file() or not args.output.exists())
        self.part_name = args.output.name if self.regular_output else "scores"
        self.writer: ResultWriter | None = None
        self.part: PartWriter | None = None
        self.temporary_folder: Path | None = None

    def run(self) -> int:
        """Score this rank's share; the exit code of the whole run."""
        from bpclip_core.running.sharding import LostRankError, RanksFailed, ScoringGroup

        try:
            with ScoringGroup(self.place) as self.group:
                try:
                    self.parts_folder = self._step(self._prepare)[0].payload
                    self.part_tokens = [report.payload for report in self._step(self._score_share)]
                    return self._step(self._merge)[0].payload
                finally:
                    self._clean_up()
        except RanksFailed as failure:
            return failure.exit_code
        except LostRankError as exc:
            print(f"bpclip score: interrupted: {display_line(str(exc))}; no output written", file=sys.stderr)
            return EXIT_INTERRUPTED

    def _step(self, work: Callable[[], Any]) -> list:
        """Do this rank's part of a step, then meet the other ranks: their reports, by rank.

        Raises this rank's own error (:func:`main` reports it), or :class:`RanksFailed` when
        only other ranks failed; rank 0 names the ranks that failed otherwise than itself.
        """
        from bpclip_core.running.sharding import RankReport, RanksFailed

        error = None
        try:
            report = RankReport(payload=work())
        except Exception as exc:  # Ctrl-C and SIGTERM are not reported: the ranks stop at once
            error = exc
            message = f"internal error ({type(exc).__name__}: {exc})" if _exit_code(exc) == EXIT_INTERNAL else str(exc)
            report = RankReport(_exit_code(exc), display_line(getattr(exc, "command_message", message)))
        reports = self.group.meet(report)
        failed = {rank: r for rank, r in enumerate(reports) if r.exit_code}
        if not failed:
            return reports
        world_size = self.place.world_size
        others = [f"rank {rank} of {world_size} failed: {r.message}" for rank, r in failed.items() if r != reports[0]]
        if self.place.is_main and others:
            print(f"bpclip score: {'; '.join(others)}; no output written", file=sys.stderr)
        if error is not None and (self.place.is_main or report != reports[0]):
            raise error
        raise RanksFailed(failed[min(failed)].exit_code)

    def _prepare(self) -> Path | None:
        """Every rank: the checks, the output, the model; rank 0 says where the parts go."""
        args, place = self.args, self.place
        self.sources = _checked_inputs(args)
        self.width = _name_width(self.sources)
        if self.regular_output or (place.is_main and args.output is not None):
            writer = ResultWriter(args.format, args.output, self.width)  # a bad --output fails here, on every rank
            if place.is_main:
                self.writer = writer
            else:  # only rank 0 writes the output
                writer.abort()
        if place.is_main and not self.regular_output:
            if place.spans_machines:
                raise UsageError(
                    "scoring on several machines needs --output naming a file on a filesystem they all share: "
                    "each rank writes its part of the results beside it"
                )
            self.temporary_folder = Path(tempfile.mkdtemp(prefix="bpclip-score-parts-"))
        self.engine = _scoring_engine(args, place.device(args.device))
        if place.is_main:
            print(
                f"model: {self.engine.description}; {place.world_size} ranks, rank 0 on device {self.engine.device}",
                file=sys.stderr,
            )
        return self.temporary_folder or (args.output.parent if self.regular_output else None)

    def _score_share(self) -> str:
        """Every rank: its share of the inputs scored into its part; the part's token."""
        from bpclip_core.running.sharding import PartWriter, part_path

        self.part_path = part_path(self.parts_folder, self.part_name, self.place)
        with self._writing_part():
            self.part = PartWriter(self.part_path, self.place)
        # the raw paths, not the expanded list: FR pairing needs the folder each file was found in
        share = self.place.shard(len(self.sources))
        scores = self.engine.iter_scores(self.args.paths, self.args.ref, subset=share)
        _write_as_scored(scores, self._write_part, progress=self.place.is_main and not self.args.no_progress)
        with self._writing_part():
            self.part.finish()
        return self.part.token

    def _write_part(self, chunk: list) -> None:
        with self._writing_part():
            self.part.write(chunk)

    @contextlib.contextmanager
    def _writing_part(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or exc
            raise OutputError(f"cannot write this rank's part of the results, {self.part_path}: {reason}") from exc

    def _merge(self) -> int | None:
        """Rank 0: the parts merged in input order into the output; the run's exit code."""
        import itertools

        from bpclip_core.running.sharding import TorchrunRank, merge_parts, part_path

        if not self.place.is_main:
            return None
        world_size = self.place.world_size
        parts = {
            part_path(self.parts_folder, self.part_name, TorchrunRank(rank, world_size)): token
            for rank, token in enumerate(self.part_tokens)
        }
        if self.writer is None:  # stdout: opened only now, so that a failed run prints no header
            self.writer = ResultWriter(self.args.format, None, self.width)
        results, failed = merge_parts(parts, len(self.sources)), []
        try:
            while batch := list(itertools.islice(results, 1024)):
                self.writer.write(batch)
                failed.extend(r for r in batch if r.error)
        except OSError as exc:  # a part missing, incomplete or left by another run
            raise OutputError(f"cannot merge the ranks' parts of the results: {exc}") from exc
        self.writer.finish()
        for path in parts:
            path.unlink(missing_ok=True)
        return _report_scored(failed, self.writer.rows)

    def _clean_up(self) -> None:
        """Remove what this rank made and the run does not keep (a finished output stays)."""
        import shutil

        if self.writer is not None:
            self.writer.abort()  # after finish(): nothing left to remove
        if self.part is not None:
            self.part.discard()
        if self.temporary_folder is not None:
            shutil.rmtree(self.temporary_folder, ignore_errors=True)


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
    """A short summary of the setup and the checkpoint; ``--json`` everything, ``--provenance`` its training record."""
    import torch
    from huggingface_hub.constants import HF_HUB_CACHE

    from bpclip_core.errors import CheckpointNotFoundError
    from bpclip_core.model.pretrained import hub_offline
    from bpclip_core.weights.checkpoint import (
        CHECKPOINT_ENV,
        HOME_ENV,
        checkpoint_dir,
        read_metadata,
        resolve_checkpoint,
    )

    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    setup = {
        "bpclip": __version__,
        "torch": torch.__version__,
        "device": device,
        CHECKPOINT_ENV: os.environ.get(CHECKPOINT_ENV),
        "checkpoint_cache": str(checkpoint_dir()),
        "imagenet_weights": str(Path(torch.hub.get_dir()) / "checkpoints"),
        "clip_weights": str(HF_HUB_CACHE),
        "hf_hub_offline": hub_offline(),
    }
    try:
        path, missing = resolve_checkpoint(args.checkpoint), None
    except CheckpointNotFoundError as exc:
        path, missing = None, exc.command_message
    meta = None if path is None else read_metadata(path)
    if args.json:
        checkpoint = None if path is None else {"path": str(path), "file_size": path.stat().st_size, **meta}
        print(json.dumps({**setup, "checkpoint": checkpoint, "checkpoint_error": missing}, indent=2))
    else:
        print(f"bpclip {__version__}, torch {torch.__version__}")
        print(f"device: {device}")
        print(
            f"checkpoints: {CHECKPOINT_ENV}={os.environ.get(CHECKPOINT_ENV, '(unset)')}; "
            f"cache {checkpoint_dir()} ({HOME_ENV})"
        )
        print(f"ImageNet weights: {setup['imagenet_weights']} (TORCH_HOME)")
        print(f"CLIP weights: {HF_HUB_CACHE} (HF_HOME); HF_HUB_OFFLINE={'1' if hub_offline() else '0'}")
        if path is None:
            print(f"checkpoint: none found ({missing})")
        else:
            print(_checkpoint_summary(path, meta, args.provenance))
    if path is None:
        return EXIT_OK if args.checkpoint is None else EXIT_USAGE
    return EXIT_OK


def _checkpoint_summary(path: Path, meta: dict[str, Any], provenance: bool) -> str:
    """``info``'s lines about one checkpoint: name, mode, backbone, training, file, size, digest."""
    config, card = meta["config"], meta.get("provenance") or {}
    scale = meta["score_scale"]
    direction = "higher is better" if scale.get("higher_is_better", True) else "lower is better"
    lines = [
        f"checkpoint: {display_line(str(path))}",
        f"  model {card.get('name') or path.stem}{' (bundled default model)' if card.get('bundled') else ''}",
        f"  mode {config['mode'].upper()}, backbone {config['backbone']}, text model {config['text_model']}",
        textwrap.fill(_trained_on(card), 100, initial_indent="  training: ", subsequent_indent=" " * 12),
        f"  scores {scale['mos_min']:g}..{scale['mos_max']:g} ({direction}), library {meta['library_version']}",
        f"  file {_size(path.stat().st_size)}, tensor digest {meta.get('tensor_digest', '(none recorded)')}",
    ]
    if provenance:
        lines.append("  provenance " + textwrap.indent(json.dumps(card, indent=2), "  ").lstrip())
    else:
        lines.append("  (--provenance: the training record; --json: everything, machine-readable)")
    return "\n".join(lines)


def _trained_on(card: dict[str, Any]) -> str:
    """What a checkpoint was trained on, in a line, from its card's provenance."""
    if not card.get("trained", False):
        return f"no: UNTRAINED ({card.get('initialisation', 'initialisation not recorded')})"
    if card.get("statement"):
        return str(card["statement"])
    if card.get("dataset"):
        epochs = f", {card['epochs']} epochs" if card.get("epochs") is not None else ""
        return f"dataset {card['dataset']}{epochs} ({card.get('recipe', 'bpclip train')})"
    if card.get("trainer"):
        return str(card["trainer"])
    return "yes (no training data recorded)"


def _size(size: int) -> str:
    """A file size for people: bytes, kB or MB (powers of 1000)."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


if __name__ == "__main__":
    sys.exit(main())
