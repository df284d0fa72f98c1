"""BPCLIP quality runs as FiftyOne brain runs, and the identity of the model behind a run.

A quality run is registered with FiftyOne's brain-run machinery (``fiftyone.core.brain``):
:class:`QualityRunConfig` is a ``BrainMethodConfig`` of method ``bpclip``, so a run shows up in
``dataset.list_brain_runs()``, ``dataset.get_brain_info(key)`` and
``dataset.load_brain_results(key)``, and ``dataset.delete_brain_run(key)`` removes the fields,
index and tags it wrote (:meth:`QualityRun.cleanup`), exactly like ``delete_quality_run``.
FiftyOne finds these classes again by their import path (``bpclip_plugins.fiftyone.runs``); a
process without bpclip installed still reads the records, as plain brain runs.

Each run records the model it scored with (:class:`ModelIdentity`): its description, its
checkpoint's digest (the ``tensor_digest`` stamped in the checkpoint's metadata, or the sha256 of
the file for checkpoints written before digests), the checkpoint's path and name, and the mode.
This module imports FiftyOne; ``bpclip_plugins.fiftyone`` imports it only when a run needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fiftyone.core.brain as fob

from .tagging import RUN_METHOD, owned_tags

_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the file


@dataclass(frozen=True)
class ModelIdentity:
    """What a run scored with: enough to tell two models (or two modes) apart.

    Attributes:
        model_hash: the checkpoint's ``tensor_digest`` (or ``sha256:`` of the file), or
            ``zero-shot:<CLIP model>`` for zero-shot CLIP.
        checkpoint: the checkpoint file (None for zero-shot CLIP).
        checkpoint_name: the model's name in its card, else the file's stem.
        mode: ``nr`` or ``fr``.
    """

    model_hash: str
    checkpoint: str | None
    checkpoint_name: str
    mode: str

    def short(self) -> str:
        """``name (MODE, hash…)`` for messages."""
        return f"{self.checkpoint_name} ({self.mode.upper()}, {self.model_hash[:19]}…)"


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (cached while the file's size and mtime stay)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = f"sha256:{digest.hexdigest()}"
    return _FILE_HASHES[key]


def model_identity(checkpoint: str | None, zero_shot: bool, mode: str) -> ModelIdentity:
    """The identity of the model a run with these options loads (no weights are read).

    Raises the checkpoint module's errors when the checkpoint cannot be found or read.
    """
    if zero_shot:
        from bpclip_core.running.zero_shot import DEFAULT_ZERO_SHOT_MODEL

        return ModelIdentity(f"zero-shot:{DEFAULT_ZERO_SHOT_MODEL}", None, f"zero-shot {DEFAULT_ZERO_SHOT_MODEL}", mode)
    from bpclip_core.weights.checkpoint import read_metadata, resolve_checkpoint

    path = resolve_checkpoint(checkpoint, mode)
    metadata = read_metadata(path)
    digest = metadata.get("tensor_digest") or file_sha256(path)
    name = (metadata.get("provenance") or {}).get("name") or path.stem
    return ModelIdentity(digest, str(path), str(name), (metadata.get("config") or {}).get("mode", mode))


class QualityRunConfig(fob.BrainMethodConfig):
    """The record of a BPCLIP quality run (a brain run of method ``bpclip``).

    Args:
        model: the engine's one-line description of the model.
        model_hash, checkpoint, checkpoint_name, mode: the :class:`ModelIdentity`.
        fields: the score, adjectives and error fields the run writes.
        parameters: the run's options (and ``failure`` when it failed).
        status: ``running``, ``completed``, ``interrupted`` or ``failed``.
    """

    def __init__(
        self,
        model: str | None = None,
        model_hash: str | None = None,
        checkpoint: str | None = None,
        checkpoint_name: str | None = None,
        mode: str = "nr",
        fields: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
        status: str = "running",
        **kwargs: Any,
    ) -> None:
        self.model = model
        self.model_hash = model_hash
        self.checkpoint = checkpoint
        self.checkpoint_name = checkpoint_name
        self.mode = mode
        self.fields = list(fields or [])
        self.parameters = dict(parameters or {})
        self.status = status
        super().__init__(**kwargs)

    @property
    def method(self) -> str:
        return RUN_METHOD

    def identity(self) -> ModelIdentity:
        """The model this run scored with."""
        return ModelIdentity(self.model_hash or "", self.checkpoint, self.checkpoint_name or "", self.mode)

    @classmethod
    def for_run(
        cls, model: str, identity: ModelIdentity, fields: list[str], parameters: dict[str, Any]
    ) -> QualityRunConfig:
        """A new run's record, status ``running``."""
        return cls(model=model, fields=fields, parameters=parameters, **asdict(identity))


class QualityRun(fob.BrainMethod):
    """The brain method behind :class:`QualityRunConfig`: knows the run's fields and how to remove them."""

    def get_fields(self, samples: Any, key: str) -> list[str]:
        return [name for name in self.config.fields if name in samples._dataset.get_field_schema()]

    def cleanup(self, samples: Any, key: str) -> None:
        """Delete the run's fields (and their index) and the tags it wrote; other runs' stay."""
        dataset = samples._dataset
        indexes = dataset.list_indexes()
        for name in self.get_fields(samples, key):
            if name in indexes:
                dataset.drop_index(name)
            dataset.delete_sample_field(name)
        ours = owned_tags(dataset.distinct("tags"), self.config.parameters.get("tag_prefix", ""))
        if ours:
            dataset.untag_samples(ours)


class QualityRunResults(fob.BrainResults):
    """A finished run's summary (:class:`bpclip_plugins.fiftyone.QualityRunSummary` as a dict)."""

    def __init__(
        self,
        samples: Any,
        config: QualityRunConfig,
        key: str,
        summary: dict[str, Any] | None = None,
        finished: str | None = None,
        backend: QualityRun | None = None,
    ) -> None:
        super().__init__(samples, config, key, backend=backend)
        self.summary = summary
        self.finished = finished

    @classmethod
    def _from_dict(cls, d: dict[str, Any], samples: Any, config: QualityRunConfig, key: str) -> QualityRunResults:
        return cls(samples, config, key, summary=d.get("summary"), finished=d.get("finished"))


def quality_runs(dataset: Any) -> list[str]:
    """The keys of the bpclip brain runs on a dataset."""
    return dataset.list_brain_runs(method=RUN_METHOD)


def run_config(dataset: Any, key: str) -> QualityRunConfig:
    """The record of the run ``key``."""
    return dataset.get_brain_info(key).config
