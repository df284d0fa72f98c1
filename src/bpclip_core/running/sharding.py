"""Scoring with several processes started by ``torchrun``: a share of the inputs per rank,
the results brought together in input order by rank 0.

Every rank expands and pairs the same inputs the same way (the engine does it from the same
arguments), scores the inputs ``rank, rank + world_size, ...`` of that list
(:meth:`TorchrunRank.shard`) on its own device, and writes their results to its *part file*
(:class:`PartWriter`: JSON lines, each a :class:`~bpclip_core.running.engine.ScoredInput` with its
input index, written to a temporary file and renamed when complete). Rank 0 merges the parts
in input order (:func:`merge_parts`) into the one output, then removes them.

The results never travel through ``torch.distributed``: the ranks use it only to meet
(:meth:`ScoringGroup.meet`), each telling the others how its step went, so that every rank
stops when one fails and all exit with the same code. The group is gloo, on GPU machines
too: the messages are a few small Python objects, not tensors, and gloo needs no CUDA
tensors or device binding for them; a rank waits at a meeting as long as the slowest rank
scores (NCCL's watchdog would end a collective that waits past its timeout, ten minutes by
default); and gloo notices at once that a peer died (its socket closes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import os
import signal
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

import torch
import torch.distributed as dist

from bpclip_core.running.engine import ScoredInput

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# How long a rank waits at a meeting for the others: as long as the slowest rank's share
# takes to score. A rank that dies is noticed at once (its socket closes), not after this.
MEETING_TIMEOUT = timedelta(days=1)
PART_FORMAT = "bpclip-scores-part/1"


@dataclass(frozen=True)
class TorchrunRank:
    """Where this process stands in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TorchrunRank | None:
        """This process's place from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); None when it runs alone (no torchrun, or one process)."""
        if not all(name in environ for name in TORCHRUN_VARIABLES) or int(environ["WORLD_SIZE"]) < 2:
            return None
        world_size = int(environ["WORLD_SIZE"])
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
        return cls(int(environ["RANK"]), world_size, int(environ["LOCAL_RANK"]), local_world_size)

    @property
    def is_main(self) -> bool:
        """Rank 0: it prints the model, the progress bar and the results, and merges the parts."""
        return self.rank == 0

    @property
    def spans_machines(self) -> bool:
        """Whether the job's ranks run on more than one machine."""
        return self.local_world_size < self.world_size

    def device(self, name: str) -> torch.device:
        """The device this rank scores on, made the current CUDA device: ``auto`` and ``cuda``
        mean ``cuda:LOCAL_RANK`` (cpu without CUDA); anything else is as named.

        Raises:
            DeviceError: this machine has no such device (e.g. fewer GPUs than ranks).
        """
        from bpclip_core.running.devices import pick_device, resolve_device

        device = pick_device(resolve_device(name, self.local_rank))
        if device.type == "cuda":  # else each rank's pinned-memory thread opens a context on cuda:0
            torch.cuda.set_device(device)
        return device

    def shard(self, total: int) -> range:
        """This rank's inputs among ``total``: every ``world_size``-th from ``rank`` (the ranks'
        shares differ by at most one input, and slow stretches of a folder are spread out)."""
        return range(self.rank, total, self.world_size)

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


@dataclass(frozen=True)
class RankReport:
    """What one rank tells the others when they meet: how its step went."""

    exit_code: int = 0  # 0: the step worked; otherwise the exit code this rank stops with
    message: str = ""  # why it failed
    payload: Any = None  # what the others need from this rank's step


class ScoringGroup:
    """The ranks' gloo process group, used only to meet (a context manager).

    While it is open, SIGTERM (how ``torchrun`` stops the other ranks when one fails) raises
    :class:`KeyboardInterrupt`, so that a stopped rank removes its temporary files.
    """

    def __init__(self, place: TorchrunRank) -> None:
        self.place = place
        self._sigterm_handler: Any = None

    def __enter__(self) -> ScoringGroup:
        dist.init_process_group("gloo", rank=self.place.rank, world_size=self.place.world_size, timeout=MEETING_TIMEOUT)
        self._sigterm_handler = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *_: object) -> None:
        signal.signal(signal.SIGTERM, self._sigterm_handler)
        with contextlib.suppress(RuntimeError):  # a peer already gone
            dist.destroy_process_group()

    def meet(self, report: RankReport) -> list[RankReport]:
        """Wait for every rank to finish its step; every rank gets every rank's report, by rank.

        Raises:
            LostRankError: another rank stopped (interrupted, killed or crashed) before meeting.
        """
        reports: list[Any] = [None] * self.place.world_size
        try:
            dist.all_gather_object(reports, report)
        except RuntimeError as exc:  # gloo: "Connection closed by peer"
            raise LostRankError(
                f"{self.place.describe()} lost contact with the other ranks: one of them stopped "
                f"(interrupted, killed or crashed; torchrun names it) ({str(exc).splitlines()[0]})"
            ) from exc
        return reports


class LostRankError(Exception):
    """Another rank stopped without meeting this one."""


class RanksFailed(Exception):
    """Other ranks failed a step that this rank got through: it stops with their exit code."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"another rank failed (exit code {exit_code})")
        self.exit_code = exit_code


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def part_path(folder: Path, name: str, place: TorchrunRank) -> Path:
    """Where a rank writes its part of the results named ``name`` (``NAME.part-R-of-W``)."""
    return folder / f"{name}.part-{place.rank}-of-{place.world_size}"


class PartWriter:
    """One rank's results as JSON lines, in a temporary file beside ``path`` renamed to it once
    complete: a part is either whole or absent.

    The first line says what the part is, with a token of this run that rank 0 checks
    (:func:`merge_parts`): a part another run left behind is never merged. File names that
    are not valid UTF-8 round-trip exactly (JSON escapes their surrogates).
    """

    def __init__(self, path: Path, place: TorchrunRank) -> None:
        self.path, self.token = path, uuid.uuid4().hex
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        self._temp: Path | None = Path(temp)
        self._stream: IO[str] = os.fdopen(fd, "w", encoding="utf-8")
        header = {"format": PART_FORMAT, "token": self.token, "rank": place.rank, "world_size": place.world_size}
        self._stream.write(json.dumps(header) + "\n")

    def write(self, chunk: Iterable[tuple[int, ScoredInput]]) -> None:
        """Append ``(input index, result)`` rows."""
        lines = [json.dumps({"index": index, **dataclasses.asdict(result)}) + "\n" for index, result in chunk]
        self._stream.write("".join(lines))
        self._stream.flush()

    def finish(self) -> None:
        """Put the complete part in place."""
        self._stream.close()
        os.replace(self._temp, self.path)
        self._temp = None

    def discard(self) -> None:
        """Remove the part, complete or not."""
        with contextlib.suppress(OSError):  # cleaning up must not hide the error that led here
            self._stream.close()
        for path in (self._temp, self.path):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        self._temp = None


class PartError(OSError):
    """A part file is missing rows, from another run, or not a part file."""


def read_part(path: Path, token: str) -> Iterator[tuple[int, ScoredInput]]:
    """The ``(input index, result)`` rows of a part, checked to be the one written with ``token``."""
    with path.open(encoding="utf-8") as stream:
        try:
            header = json.loads(stream.readline())
        except json.JSONDecodeError:
            header = {}
        if not isinstance(header, dict) or header.get("format") != PART_FORMAT:
            raise PartError(f"{path} is not a part file of bpclip scores")
        if header.get("token") != token:
            raise PartError(
                f"{path} was not written by this run (left by another run; with several machines, "
                f"is the output's folder on a filesystem every machine shares?)"
            )
        for line in stream:
            row = json.loads(line)
            index = row.pop("index")
            row["top_adjectives"] = [tuple(pair) for pair in row["top_adjectives"]]
            yield index, ScoredInput(**row)


def merge_parts(parts: Mapping[Path, str], total: int) -> Iterator[ScoredInput]:
    """The results of all parts in input order, given each part's path and token.

    Raises:
        PartError: an input is missing or twice (checked as the rows go by).
    """
    expected = 0
    for index, result in heapq.merge(*(read_part(path, token) for path, token in parts.items()), key=_index):
        if index != expected:
            what = f"hold input {index} ({result.path}) twice" if index < expected else f"lack input {expected}"
            raise PartError(f"the parts {what}")
        expected += 1
        yield result
    if expected != total:
        raise PartError(f"the parts lack input {expected} (they hold {expected} of the {total} inputs)")


def _index(row: tuple[int, ScoredInput]) -> int:
    return row[0]
