"""BPCLIP for FiftyOne: score samples, store dominant adjectives, tag quality bands.

Use it from a notebook (:func:`compute_quality`) or from the App through the plugin in
``plugin/`` (operator ``@bpclip/quality/compute_quality``; make it visible with
``bpclip fiftyone install``). Both run the same code:

- scores go to ``score_field`` (normalised quality, 1 = best), the top-k adjectives to
  ``adjectives_field``, and the reason of any failure to ``<score_field>_error`` with the
  tag ``bpclip:error`` (the rest are still scored);
- results are written in bulk every few batches, so a run killed half-way keeps what it
  wrote, and a rerun scores only the samples still without a score (unless ``overwrite``);
- fields that exist and were not written by a bpclip run are never overwritten unless asked;
- every run is recorded on the dataset (``list_quality_runs``, ``get_quality_run``,
  ``delete_quality_run``), the way brain runs are.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bpclip_core.errors import InputError

from ..engines import shared_engine

RUN_METHOD = "bpclip"
ERROR_TAG = "bpclip:error"
QUALITY_TAG_PREFIX = "quality:"
ADJECTIVE_TAG_PREFIX = "adjective:"
PLUGIN_NAME = "@bpclip/quality"
PLUGIN_SOURCE = Path(__file__).with_name("plugin")
BANDS = ("none", "thresholds", "quantiles")


@dataclass(frozen=True)
class QualityTagging:
    """How samples are tagged after scoring.

    Attributes:
        bands: ``none``, ``thresholds`` (cut the score at ``cut_points``) or ``quantiles``
            (cut at those quantiles of the view's scores).
        cut_points: increasing cut points, one fewer than ``labels``.
        labels: band names, worst first; tags read ``quality:<label>``.
        tag_adjectives: tag each sample with its dominant adjective (``adjective:<word>``).
    """

    bands: str = "quantiles"
    cut_points: tuple[float, ...] = (1 / 3, 2 / 3)
    labels: tuple[str, ...] = ("low", "medium", "high")
    tag_adjectives: bool = True

    def __post_init__(self) -> None:
        if self.bands not in BANDS:
            raise ValueError(f"bands must be one of {BANDS}, got {self.bands!r}")
        if len(self.labels) != len(self.cut_points) + 1:
            raise ValueError(f"{len(self.cut_points)} cut points need {len(self.cut_points) + 1} labels")
        if list(self.cut_points) != sorted(self.cut_points):
            raise ValueError(f"cut points must increase: {self.cut_points}")
        if self.bands == "quantiles" and not all(0 < q < 1 for q in self.cut_points):
            raise ValueError(f"quantile cut points must lie in (0, 1): {self.cut_points}")


def band_labels(scores: list[float], tagging: QualityTagging) -> list[str | None]:
    """The band label of each score (None where there is no score or no banding)."""
    valid = np.array([s for s in scores if s is not None], dtype=float)
    if tagging.bands == "none" or valid.size == 0:
        return [None] * len(scores)
    cuts = np.quantile(valid, tagging.cut_points) if tagging.bands == "quantiles" else np.array(tagging.cut_points)
    return [None if s is None else tagging.labels[int(np.searchsorted(cuts, s, side="right"))] for s in scores]


@dataclass
class QualityRunSummary:
    """What a run did: counts and where results went."""

    run_key: str
    model: str
    total: int
    scored: int
    failed: int
    skipped: int
    fields: dict[str, str] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bpclip_runs(dataset: Any) -> list[str]:
    return [key for key in dataset.list_runs() if dataset.get_run_info(key).config.method == RUN_METHOD]


def _owned_fields(dataset: Any) -> dict[str, str]:
    """field name -> run key, for every field a bpclip run wrote."""
    owned = {}
    for key in _bpclip_runs(dataset):
        for name in dataset.get_run_info(key).config.fields:
            owned[name] = key
    return owned


def _check_fields(dataset: Any, fields: list[str], run_key: str, overwrite: bool) -> None:
    schema = dataset.get_field_schema()
    owned = _owned_fields(dataset)
    for name in fields:
        if name in ("id", "filepath", "tags", "metadata") or name.startswith("_"):
            raise ValueError(f"{name!r} is a reserved FiftyOne field; choose another field name")
        if name in schema and not overwrite and owned.get(name) != run_key:
            writer = f"bpclip run {owned[name]!r}" if name in owned else "something other than bpclip"
            raise ValueError(
                f"field {name!r} already exists (written by {writer}); choose another field name, "
                f"or pass overwrite=True to replace it"
            )


def iter_compute_quality(
    samples: Any,
    checkpoint: str | None = None,
    zero_shot: bool = False,
    mode: str = "nr",
    reference_field: str | None = None,
    score_field: str = "bpclip_score",
    adjectives_field: str = "bpclip_adjectives",
    top_k: int = 3,
    tagging: QualityTagging | None = None,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    run_key: str | None = None,
    write_every: int = 4,
    num_workers: int | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`compute_quality` as a generator of progress updates ``{"progress", "label"}``.

    Its return value (``StopIteration.value``) is the :class:`QualityRunSummary`.
    """
    import fiftyone as fo

    tagging = tagging or QualityTagging()
    if mode not in ("nr", "fr"):
        raise ValueError(f"mode must be 'nr' or 'fr', got {mode!r}")
    if mode == "fr" and not reference_field:
        raise ValueError("full-reference scoring needs reference_field: the field holding each reference image path")
    if zero_shot and mode == "fr":
        raise ValueError("zero-shot CLIP is no-reference only; FR scoring needs a BPCLIP FR checkpoint")
    dataset = samples._dataset
    run_key = run_key or score_field
    if not run_key.isidentifier():
        raise ValueError(f"run key {run_key!r} must be a valid Python identifier")
    error_field = f"{score_field}_error"
    fields = [score_field, adjectives_field, error_field]
    _check_fields(dataset, fields, run_key, overwrite)
    if mode == "fr" and reference_field not in dataset.get_field_schema():
        raise ValueError(f"reference field {reference_field!r} does not exist on dataset {dataset.name!r}")

    engine = shared_engine(
        checkpoint, zero_shot, mode, device=device, batch_size=batch_size,
        top_k=top_k, num_workers=num_workers,
    )  # fmt: skip
    parameters = {
        "checkpoint": checkpoint, "zero_shot": zero_shot, "mode": mode, "reference_field": reference_field,
        "top_k": top_k, "tagging": asdict(tagging), "batch_size": batch_size, "device": str(engine.device),
        "overwrite": overwrite,
    }  # fmt: skip
    config = dataset.init_run(
        method=RUN_METHOD, model=engine.description, fields=fields, parameters=parameters, status="running"
    )
    dataset.register_run(run_key, config, overwrite=True)
    for name, kind in ((score_field, fo.FloatField), (error_field, fo.StringField)):
        if name not in dataset.get_field_schema():
            dataset.add_sample_field(name, kind)
    if adjectives_field not in dataset.get_field_schema():
        dataset.add_sample_field(adjectives_field, fo.ListField, subfield=fo.StringField)

    total = len(samples)
    todo = samples if overwrite or score_field not in samples.get_field_schema() else samples.exists(score_field, False)
    ids = todo.values("id")
    paths = todo.values("filepath")
    references = todo.values(reference_field) if mode == "fr" else None
    skipped = total - len(ids)
    scored = failed = 0
    pending: dict[str, dict[str, Any]] = {score_field: {}, adjectives_field: {}, error_field: {}}

    def flush() -> None:
        for name, values in pending.items():
            if values:
                dataset.set_values(name, values, key_field="id")
                values.clear()

    yield {"progress": 0.0, "label": f"BPCLIP: scoring {len(ids)} of {total} samples ({skipped} already scored)"}
    if ids:
        if references is not None:
            references = [r if r and os.path.isfile(r) else None for r in references]
        try:
            chunks = engine.iter_scores(paths, references)
            for index_chunk, (_, chunk) in enumerate(chunks, start=1):
                for index, result in chunk:
                    sample_id = ids[index]
                    if result.error is not None:
                        failed += 1
                        message = result.error
                        if references is not None and references[index] is None:
                            message = f"no reference image (field {reference_field!r} is empty or the file is missing)"
                    else:
                        scored += 1
                        message = None
                    pending[score_field][sample_id] = result.score
                    pending[adjectives_field][sample_id] = [w for w, _ in result.top_adjectives] or None
                    pending[error_field][sample_id] = message
                if index_chunk % write_every == 0:
                    flush()  # a few bulk writes every `write_every` batches: at most one per batch
                done = scored + failed
                yield {"progress": done / len(ids), "label": f"BPCLIP: scored {done}/{len(ids)}"}
        except InputError as exc:  # e.g. no sample has a reference image
            for sample_id in ids:
                if sample_id not in pending[score_field]:
                    pending[score_field][sample_id] = None
                    pending[error_field][sample_id] = str(exc)
                    failed += 1
        flush()

    tags = _retag(samples, score_field, adjectives_field, error_field, tagging)
    summary = QualityRunSummary(
        run_key, engine.description, total, scored, failed, skipped,
        {"score": score_field, "adjectives": adjectives_field, "error": error_field}, tags,
    )  # fmt: skip
    config.status = "completed"
    dataset.update_run_config(run_key, config)
    results = dataset.init_run_results(
        run_key, summary=summary.to_dict(), finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    dataset.save_run_results(run_key, results, overwrite=True)
    yield {"progress": 1.0, "label": f"BPCLIP: {scored} scored, {failed} failed, {skipped} skipped"}
    return summary


def _retag(samples: Any, score_field: str, adjectives_field: str, error_field: str, tagging: QualityTagging) -> dict:
    """Replace this view's bpclip tags: quality bands, dominant adjectives and errors."""
    ours = [
        t
        for t in samples.distinct("tags")
        if t.startswith((QUALITY_TAG_PREFIX, ADJECTIVE_TAG_PREFIX)) or t == ERROR_TAG
    ]
    if ours:
        samples.untag_samples(ours)
    ids, scores, adjectives, errors = samples.values(["id", score_field, adjectives_field, error_field])
    groups: dict[str, list[str]] = defaultdict(list)
    for sample_id, label in zip(ids, band_labels(scores, tagging)):
        if label is not None:
            groups[QUALITY_TAG_PREFIX + label].append(sample_id)
    if tagging.tag_adjectives:
        for sample_id, words in zip(ids, adjectives):
            if words:
                groups[ADJECTIVE_TAG_PREFIX + words[0]].append(sample_id)
    for sample_id, error in zip(ids, errors):
        if error:
            groups[ERROR_TAG].append(sample_id)
    for tag, tagged in groups.items():  # one bulk write per tag
        samples.select(tagged).tag_samples(tag)
    return {tag: len(tagged) for tag, tagged in sorted(groups.items())}


def compute_quality(
    samples: Any, progress: Callable[[dict[str, Any]], Any] | bool = False, **options: Any
) -> QualityRunSummary:
    """Score a FiftyOne dataset or view with BPCLIP and tag it (see the module docstring).

    Args:
        samples: a dataset or view.
        progress: True for a progress bar, or a callback receiving ``{"progress", "label"}``.
        **options: see :func:`iter_compute_quality` (checkpoint, zero_shot, mode,
            reference_field, score_field, adjectives_field, top_k, tagging, batch_size,
            device, overwrite, run_key).
    """
    steps = iter_compute_quality(samples, **options)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=1.0, desc="BPCLIP", bar_format="{l_bar}{bar}| {n:.0%}")
    try:
        while True:
            update = next(steps)
            if callable(progress):
                progress(update)
            elif bar is not None:
                bar.n = update["progress"]
                bar.set_description(update["label"])
                bar.refresh()
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()


def list_quality_runs(dataset: Any) -> list[str]:
    """The keys of the bpclip runs recorded on a dataset."""
    return _bpclip_runs(dataset)


def get_quality_run(dataset: Any, run_key: str) -> dict[str, Any]:
    """A run's record: when, which model, parameters, fields, status and (when finished) its summary."""
    if run_key not in _bpclip_runs(dataset):
        raise KeyError(f"no bpclip run {run_key!r} on dataset {dataset.name!r}; runs: {_bpclip_runs(dataset)}")
    info = dataset.get_run_info(run_key)
    record = {"run_key": run_key, "timestamp": str(info.timestamp), **info.config.serialize()}
    results = dataset.load_run_results(run_key)
    if results is not None:
        record["summary"] = getattr(results, "summary", None)
        record["finished"] = getattr(results, "finished", None)
    return record


def delete_quality_run(dataset: Any, run_key: str, delete_fields: bool = True) -> None:
    """Delete a run record and (by default) the fields and tags it wrote."""
    record = get_quality_run(dataset, run_key)
    if delete_fields:
        for name in record["fields"]:
            if name in dataset.get_field_schema():
                dataset.delete_sample_field(name)
        ours = [t for t in dataset.distinct("tags") if t.startswith((QUALITY_TAG_PREFIX, ADJECTIVE_TAG_PREFIX))]
        dataset.untag_samples([*ours, ERROR_TAG])
    dataset.delete_run(run_key)


def install_plugin(plugins_dir: str | Path | None = None, copy: bool = False) -> Path:
    """Make the ``@bpclip/quality`` plugin visible to FiftyOne; returns where it now lives.

    Links (or copies) the plugin folder into ``plugins_dir`` (default: FiftyOne's
    ``plugins_dir`` setting, i.e. ``FIFTYONE_PLUGINS_DIR``).
    """
    if plugins_dir is None:
        import fiftyone as fo

        plugins_dir = fo.config.plugins_dir
    if not plugins_dir:
        raise ValueError("FiftyOne has no plugins directory: set FIFTYONE_PLUGINS_DIR or pass plugins_dir")
    target = Path(plugins_dir).expanduser() / "bpclip" / "quality"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if copy:
        shutil.copytree(PLUGIN_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target.symlink_to(PLUGIN_SOURCE.resolve(), target_is_directory=True)
    return target
