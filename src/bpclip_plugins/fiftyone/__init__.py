"""BPCLIP for FiftyOne: score samples, store dominant adjectives, tag quality bands.

Use it from a notebook (:func:`compute_quality`) or from the App through the plugin in
``plugin/`` (operator ``@bpclip/quality/compute_quality``; make it visible with
``bpclip fiftyone install``). Both run the same code:

- scores go to ``score_field`` (normalised quality, 1 = best), the top-k adjectives to
  ``adjectives_field``, and the reason of any failure to ``<score_field>_error`` (a field
  made only when something failed) with the tag ``bpclip:error`` (the rest are still scored);
- each run owns its tags: the default run's read ``quality:low``, ``adjective:blurry`` and
  ``bpclip:error``; a run with another score field prefixes them with its tag prefix
  (default: the score field, e.g. ``sharp_score/quality:low``), so a rerun replaces, and
  deleting a run removes, only its own tags;
- a run on a view scores and tags exactly the view's samples as it starts, read by id on the
  dataset, so a view that hides the run's fields (``select_fields``) works; an empty view
  changes nothing;
- results are keyed to the sample they came from: a sample whose filepath is not a file
  (a folder, a missing path) is that sample's error;
- results are written in bulk every few batches, so a run killed half-way keeps what it
  wrote, and a rerun scores only the samples still without a score (unless ``overwrite``);
- fields that exist and were not written by a bpclip run are never overwritten unless asked;
- default fields: ``bpclip_score``/``bpclip_adjectives`` for NR, ``bpclip_fr_score``/
  ``bpclip_fr_adjectives`` for FR;
- every run is a FiftyOne brain run of method ``bpclip`` (``dataset.list_brain_runs()``; see
  :mod:`.runs`), also read through ``list_quality_runs``, ``get_quality_run`` and
  ``delete_quality_run``. It records the model: its description, the checkpoint's digest, path
  and name, and the mode. Resuming or rerunning into a score field that holds another model's
  (or mode's) scores is refused with the reason, before any work: choose a new field, or
  ``overwrite=True``, which rescores the run's samples and clears the old model's scores (and
  tags) everywhere else, so a field never mixes two models;
- quality bands are absolute by default (``thresholds``): cut points on the model's calibrated
  score scale (normalised MOS of its card, 1 = best), so a set of pristine photos is not a third
  "low"; ``quantiles`` cuts at quantiles of the run's scores instead;
- the score field is indexed (the App's "Sort by" offers it).
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

from bpclip_core.errors import InputError

from ..engines import shared_engine
from .tagging import (
    DEFAULT_CUT_POINTS,
    ERROR_TAG,
    TIE_TOLERANCE,
    QualityTagging,
    band_labels,
    bands_are_meaningful,
    bands_on_scale,
    default_tag_prefix,
    owned_tags,
    run_tags,
)

__all__ = [
    "DEFAULT_CUT_POINTS",
    "DEFAULT_FIELDS",
    "ERROR_TAG",
    "NOTHING_TO_SCORE",
    "PLUGIN_NAME",
    "QualityRunSummary",
    "QualityTagging",
    "RunOptionError",
    "band_labels",
    "bands_are_meaningful",
    "bands_on_scale",
    "check_run_options",
    "compute_quality",
    "default_fields",
    "default_tag_prefix",
    "delete_quality_run",
    "get_quality_run",
    "install_plugin",
    "iter_compute_quality",
    "list_quality_runs",
    "owned_tags",
    "run_tags",
]
PLUGIN_NAME = "@bpclip/quality"
PLUGIN_SOURCE = Path(__file__).with_name("plugin")
DEFAULT_FIELDS = {"nr": ("bpclip_score", "bpclip_adjectives"), "fr": ("bpclip_fr_score", "bpclip_fr_adjectives")}
SUMMARY_FIELDS = ("score", "adjectives", "error")  # the keys of a summary's ``fields``
NOTHING_TO_SCORE = "the view has no samples: nothing to score"


@dataclass
class QualityRunSummary:
    """What a run did: counts, where results went and what to know about them."""

    run_key: str
    model: str
    total: int
    scored: int
    failed: int
    skipped: int
    fields: dict[str, str] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bands: str = ""  # how the quality bands cut (:func:`bands_on_scale`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        """One line for the user: the counts, then the warnings."""
        counts = f"BPCLIP: {self.scored} scored, {self.failed} failed, {self.skipped} skipped"
        return "; ".join([counts, *self.warnings])


def _bpclip_runs(dataset: Any) -> list[str]:
    from .runs import quality_runs

    return quality_runs(dataset)


def _run_config(dataset: Any, run_key: str) -> Any:
    from .runs import run_config

    return run_config(dataset, run_key)


def _owned_fields(dataset: Any) -> dict[str, str]:
    """field name -> run key, for every field a bpclip run wrote."""
    owned = {}
    for key in _bpclip_runs(dataset):
        for name in _run_config(dataset, key).fields:
            owned[name] = key
    return owned


def default_fields(mode: str) -> tuple[str, str]:
    """(score field, adjectives field) of a run of ``mode`` that names none."""
    return DEFAULT_FIELDS.get(mode, DEFAULT_FIELDS["nr"])


def _free_field(dataset: Any, candidates: list[str]) -> str:
    """The first of ``candidates`` (then ``<last>_2``, ``_3`` ...) that is not a field of the dataset."""
    schema = dataset.get_field_schema()
    for name in candidates:
        if name not in schema:
            return name
    n = 2
    while f"{candidates[-1]}_{n}" in schema:
        n += 1
    return f"{candidates[-1]}_{n}"


def _check_same_model(dataset: Any, score_field: str, identity: Any) -> None:
    """Refuse a run into ``score_field`` when the scores there came from another model or mode:
    a resumed or repeated run would skip them and leave two models' scores in one field."""
    owner = _owned_fields(dataset).get(score_field)
    if owner is None:
        return
    recorded = _run_config(dataset, owner).identity()
    if (recorded.model_hash, recorded.mode) == (identity.model_hash, identity.mode):
        return
    held = len(dataset.exists(score_field))
    if not held:
        return
    other = _free_field(dataset, [default_fields(identity.mode)[0], f"{score_field}_{identity.mode}"])
    raise RunOptionError(
        "score_field",
        f"field {score_field!r} holds {held} scores of another model: {recorded.short()} (run {owner!r}); "
        f"this run would score with {identity.short()}. A field must hold one model's scores: choose a new "
        f"score field (e.g. {other!r}), or overwrite (overwrite=True, the form's 'Overwrite existing scores') "
        "to replace all of them",
    )


class RunOptionError(ValueError):
    """A run option that cannot work; ``option`` names it (the form field the App marks)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _check_fields(dataset: Any, fields: list[str], run_key: str, overwrite: bool) -> None:
    schema = dataset.get_field_schema()
    owned = _owned_fields(dataset)
    # the error field is named after the score field: a clash there is the score field's
    options = ("score_field", "adjectives_field", "score_field")
    for name, option in zip(fields, options):
        if name in ("id", "filepath", "tags", "metadata") or name.startswith("_"):
            raise RunOptionError(option, f"{name!r} is a reserved FiftyOne field; choose another field name")
        if name in schema and not overwrite and owned.get(name) != run_key:
            writer = f"bpclip run {owned[name]!r}" if name in owned else "something other than bpclip"
            raise RunOptionError(
                option,
                f"field {name!r} already exists (written by {writer}); choose another field name, "
                f"or pass overwrite=True to replace it",
            )


def iter_compute_quality(
    samples: Any,
    checkpoint: str | None = None,
    zero_shot: bool = False,
    mode: str = "nr",
    reference_field: str | None = None,
    score_field: str | None = None,
    adjectives_field: str | None = None,
    top_k: int = 3,
    tagging: QualityTagging | None = None,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    run_key: str | None = None,
    write_every: int = 4,
    num_workers: int | None = None,
    tag_prefix: str | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`compute_quality` as a generator of progress updates ``{"progress", "label"}``.

    ``score_field`` and ``adjectives_field`` default to :func:`default_fields` of the mode. Its
    return value (``StopIteration.value``) is the :class:`QualityRunSummary`. A failure after
    the run was recorded marks the run ``failed`` (with the reason) and is re-raised.
    """
    from .runs import QualityRun, QualityRunConfig, QualityRunResults, model_identity

    tagging = tagging or QualityTagging()
    dataset = samples._dataset
    score_field = score_field or default_fields(mode)[0]
    adjectives_field = adjectives_field or default_fields(mode)[1]
    run_key = run_key or score_field
    prefix = default_tag_prefix(score_field) if tag_prefix is None else tag_prefix
    fields = check_run_options(
        dataset, checkpoint, zero_shot, mode, reference_field, score_field, adjectives_field, run_key, prefix, overwrite
    )
    identity = model_identity(checkpoint, zero_shot, mode)
    owner = _owned_fields(dataset).get(score_field)
    previous = _run_config(dataset, owner).identity() if owner is not None else None
    engine = shared_engine(
        checkpoint, zero_shot, mode, device=device, batch_size=batch_size,
        top_k=top_k, num_workers=num_workers,
    )  # fmt: skip
    bands = bands_on_scale(tagging, engine.model.card.score_scale)
    parameters = {
        "checkpoint": checkpoint, "zero_shot": zero_shot, "mode": mode, "reference_field": reference_field,
        "top_k": top_k, "tagging": asdict(tagging), "bands": bands, "batch_size": batch_size,
        "device": str(engine.device), "overwrite": overwrite, "tag_prefix": prefix,
    }  # fmt: skip
    # the run's samples, fixed now and then read by id on the dataset: the view may hide the run's
    # fields (select_fields) or stop matching once they are written (a match on missing scores)
    ids = samples.values("id")
    summary = QualityRunSummary(run_key, engine.description, 0, 0, 0, 0, dict(zip(SUMMARY_FIELDS, fields)))
    summary.bands = bands
    if not ids:  # nothing to do: the dataset and its run records stay as they are
        summary.warnings.append(NOTHING_TO_SCORE)
        yield {"progress": 1.0, "label": summary.message()}
        return summary
    config = QualityRunConfig.for_run(engine.description, identity, fields, parameters)
    method = config.build()
    method.register_run(dataset, run_key, overwrite=True, cleanup=False)  # a resumed run keeps its fields
    try:
        cleared = 0
        if previous is not None and (previous.model_hash, previous.mode) != (identity.model_hash, identity.mode):
            cleared = _clear_outside(dataset, ids, fields, prefix)  # overwrite: one model per field
        yield from _score_and_tag(dataset, ids, engine, summary, mode, reference_field, tagging, prefix, overwrite,
                                  write_every)  # fmt: skip
        if cleared:
            summary.warnings.append(
                f"cleared {cleared} results of the previous model {previous.short()} outside this run's samples"
            )
    except BaseException as exc:
        config.status = "interrupted" if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) else "failed"
        config.parameters = {**config.parameters, "failure": f"{type(exc).__name__}: {exc}"}
        QualityRun.update_run_config(dataset, run_key, config)
        raise
    config.status = "completed"
    QualityRun.update_run_config(dataset, run_key, config)
    finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results = QualityRunResults(dataset, config, run_key, summary=summary.to_dict(), finished=finished, backend=method)
    method.save_run_results(dataset, run_key, results, overwrite=True)
    yield {"progress": 1.0, "label": summary.message()}
    return summary


def _clear_outside(dataset: Any, ids: list[str], fields: list[str], prefix: str) -> int:
    """Clear the results (scores, adjectives, errors and this run's tags) of the samples outside
    ``ids``: what an overwrite with another model would otherwise leave behind. Returns how many."""
    schema = dataset.get_field_schema()
    present = [name for name in fields if name in schema]
    keep = set(ids)
    stale = sorted({i for name in present for i in dataset.exists(name).values("id")} - keep)
    for name in present if stale else []:
        dataset.set_values(name, dict.fromkeys(stale), key_field="id")
    for batch in _by_ids(dataset, stale):
        ours = owned_tags(batch.distinct("tags"), prefix)
        if ours:
            batch.untag_samples(ours)
    return len(stale)


def check_run_options(
    dataset: Any,
    checkpoint: str | None,
    zero_shot: bool,
    mode: str,
    reference_field: str | None,
    score_field: str,
    adjectives_field: str,
    run_key: str,
    tag_prefix: str,
    overwrite: bool,
    identity: Any = None,
) -> list[str]:
    """Everything about a run that can be refused before any work; returns its fields.

    ``identity`` is the run's :class:`.runs.ModelIdentity` (found from the options when None;
    an unreadable checkpoint raises the checkpoint module's error).

    Raises :class:`RunOptionError` (a ValueError) naming the option and the reason (the App
    shows it under that form field).
    """
    if mode not in ("nr", "fr"):
        raise RunOptionError("mode", f"mode must be 'nr' or 'fr', got {mode!r}")
    if mode == "fr" and not reference_field:
        raise RunOptionError(
            "reference_field",
            "full-reference scoring needs reference_field: the field holding each reference image path",
        )
    if zero_shot and mode == "fr":
        raise RunOptionError("model", "zero-shot CLIP is no-reference only; FR scoring needs a BPCLIP FR checkpoint")
    if not run_key.isidentifier():
        raise RunOptionError("score_field", f"run key {run_key!r} must be a valid Python identifier")
    if run_key in dataset.list_brain_runs() and run_key not in _bpclip_runs(dataset):
        raise RunOptionError(
            "score_field", f"brain key {run_key!r} belongs to another brain method; choose another score field"
        )
    fields = [score_field, adjectives_field, f"{score_field}_error"]
    _check_fields(dataset, fields, run_key, overwrite)
    if identity is None:
        from .runs import model_identity

        identity = model_identity(checkpoint, zero_shot, mode)
    if not overwrite:
        _check_same_model(dataset, score_field, identity)
    if mode == "fr" and reference_field not in dataset.get_field_schema():
        raise RunOptionError(
            "reference_field", f"reference field {reference_field!r} does not exist on dataset {dataset.name!r}"
        )
    for other in _bpclip_runs(dataset):
        other_prefix = _run_config(dataset, other).parameters.get("tag_prefix", "")
        if other != run_key and other_prefix == tag_prefix:
            raise RunOptionError(
                "tag_prefix",
                f"bpclip run {other!r} already tags with the prefix {tag_prefix!r}; choose another tag prefix",
            )
    return fields


def _file_or_none(path: Any) -> str | None:
    return path if isinstance(path, str) and path and os.path.isfile(path) else None


ID_BATCH = 50_000  # sample ids per select(): keeps each query far below MongoDB's 16 MB limit


def _by_ids(dataset: Any, ids: list[str]) -> Iterator[Any]:
    """Views of the dataset's samples ``ids``, in batches, with every dataset field visible."""
    for start in range(0, len(ids), ID_BATCH):
        yield dataset.select(ids[start : start + ID_BATCH])


def _values_by_id(dataset: Any, ids: list[str], names: list[str]) -> dict[str, list[Any]]:
    """The dataset's values of ``names`` for the samples ``ids``: name -> values in the order of ``ids``."""
    rows: dict[str, list[Any]] = {}
    for batch in _by_ids(dataset, ids):
        columns = batch.values(["id", *names])
        rows.update((sample_id, values) for sample_id, *values in zip(*columns))
    return {name: [rows[sample_id][k] for sample_id in ids] for k, name in enumerate(names)}


def _score_and_tag(
    dataset: Any,
    view_ids: list[str],
    engine: Any,
    summary: QualityRunSummary,
    mode: str,
    reference_field: str | None,
    tagging: QualityTagging,
    prefix: str,
    overwrite: bool,
    write_every: int,
) -> Iterator[dict[str, Any]]:
    """Score the samples ``view_ids`` still to do, write results keyed by sample id, retag; fills ``summary``."""
    import fiftyone as fo

    fields = [summary.fields[name] for name in SUMMARY_FIELDS]
    score_field, adjectives_field, error_field = fields
    if score_field not in dataset.get_field_schema():
        dataset.add_sample_field(score_field, fo.FloatField)
    if adjectives_field not in dataset.get_field_schema():
        dataset.add_sample_field(adjectives_field, fo.ListField, subfield=fo.StringField)
    if score_field not in dataset.list_indexes():  # the App sorts only by indexed fields
        dataset.create_index(score_field)

    total = len(view_ids)
    names = ["filepath", score_field] + ([reference_field] if mode == "fr" else [])
    known = _values_by_id(dataset, view_ids, names)
    todo = [i for i, score in enumerate(known[score_field]) if overwrite or score is None]
    ids = [view_ids[i] for i in todo]
    paths = [known["filepath"][i] for i in todo]
    references = [known[reference_field][i] for i in todo] if mode == "fr" else None
    skipped = total - len(ids)
    pending: dict[str, dict[str, Any]] = {score_field: {}, adjectives_field: {}, error_field: {}}
    errors: dict[str, str] = {}  # sample id -> reason, not yet written
    failed: set[str] = set()

    def fail(sample_id: str, reason: str) -> None:
        failed.add(sample_id)
        errors[sample_id] = reason
        pending[score_field][sample_id] = None
        pending[adjectives_field][sample_id] = None

    # only regular files reach the engine (a folder would expand into many images): one input per sample
    runnable = []
    for position, (sample_id, path) in enumerate(zip(ids, paths)):
        if _file_or_none(path) is None:
            if isinstance(path, str) and os.path.isdir(path):
                fail(sample_id, f"filepath {path!r} is a folder, not an image file")
            elif isinstance(path, str) and os.path.exists(path):
                fail(sample_id, f"filepath {path!r} is not a regular file")
            else:
                fail(sample_id, f"no such file: {path!r}")
        elif references is not None and _file_or_none(references[position]) is None:
            fail(sample_id, f"no reference image (field {reference_field!r} is empty or the file is missing)")
        else:
            runnable.append(position)

    def flush() -> None:
        if errors and error_field not in dataset.get_field_schema():
            dataset.add_sample_field(error_field, fo.StringField)  # made only when something failed
        pending[error_field].update(errors)
        errors.clear()
        for name, values in pending.items():
            if values and (name != error_field or name in dataset.get_field_schema()):
                dataset.set_values(name, values, key_field="id")
            values.clear()

    if error_field in dataset.get_field_schema():  # a rerun clears the reasons of what it scores now
        pending[error_field].update({sample_id: None for sample_id in ids})
    yield {"progress": 0.0, "label": f"BPCLIP: scoring {len(ids)} of {total} samples ({skipped} already scored)"}
    done = len(ids) - len(runnable)
    if runnable:
        run_paths = [paths[p] for p in runnable]
        run_refs = [references[p] for p in runnable] if references is not None else None
        try:
            for index_chunk, (count, chunk) in enumerate(engine.iter_scores(run_paths, run_refs), start=1):
                if count != len(runnable):  # never map results by a position that shifted
                    raise RuntimeError(f"the engine expanded {len(runnable)} sample files into {count} inputs")
                for index, result in chunk:
                    sample_id = ids[runnable[index]]
                    if result.error is not None:
                        fail(sample_id, result.error)
                    else:
                        pending[score_field][sample_id] = result.score
                        pending[adjectives_field][sample_id] = [w for w, _ in result.top_adjectives] or None
                    done += 1
                if index_chunk % write_every == 0:
                    flush()  # a few bulk writes every `write_every` batches: at most one per batch
                yield {"progress": done / len(ids), "label": f"BPCLIP: scored {done}/{len(ids)}"}
        except InputError as exc:  # e.g. no sample has a reference image
            for position in runnable[done - (len(ids) - len(runnable)) :]:
                fail(ids[position], str(exc))
    flush()

    summary.total, summary.scored, summary.failed, summary.skipped = total, len(ids) - len(failed), len(failed), skipped
    summary.tags, summary.warnings = _retag(dataset, view_ids, fields, tagging, prefix)


def _retag(
    dataset: Any, ids: list[str], fields: list[str], tagging: QualityTagging, prefix: str
) -> tuple[dict[str, int], list[str]]:
    """Replace this run's tags on the samples ``ids`` (quality bands, dominant adjectives, errors);
    other runs' tags stay. Returns the tag counts and any warnings."""
    score_field, adjectives_field, error_field = fields
    has_errors = error_field in dataset.get_field_schema()
    names = ["tags", score_field, adjectives_field] + ([error_field] if has_errors else [])
    known = _values_by_id(dataset, ids, names)
    ours = owned_tags(sorted({tag for tags in known["tags"] for tag in tags}), prefix)
    if ours:
        for batch in _by_ids(dataset, ids):
            batch.untag_samples(ours)
    quality_tag, adjective_tag, error_tag = run_tags(prefix)
    scores, adjectives = known[score_field], known[adjectives_field]
    errors = known[error_field] if has_errors else [None] * len(ids)
    groups: dict[str, list[str]] = defaultdict(list)
    warnings = []
    scored = sum(s is not None for s in scores)
    if not scored:  # every sample failed: no bands to cut, and no reason to doubt the model
        failed = sum(bool(e) for e in errors)
        warnings.append(f"nothing was scored: {failed} of {len(ids)} samples failed (reasons in {error_field!r})")
    elif bands_are_meaningful(scores, tagging):
        for sample_id, label in zip(ids, band_labels(scores, tagging)):
            if label is not None:
                groups[quality_tag + label].append(sample_id)
        tied = not bands_are_meaningful(scores, QualityTagging(bands="quantiles"))
        if tagging.bands == "thresholds" and scored > 1 and tied:  # banded, but worth a look
            warnings.append(
                f"all {scored} scores are equal within {TIE_TOLERANCE:g} (is the model trained? see the run's model)"
            )
    elif scored == 1:
        warnings.append("no quality bands: quantile bands need at least 2 scored samples, 1 was scored")
    else:
        warnings.append(
            f"no quality bands: all {scored} scores are equal within {TIE_TOLERANCE:g}, so quantiles cannot "
            "separate them (is the model trained? see the run's model)"
        )
    if tagging.tag_adjectives:
        for sample_id, words in zip(ids, adjectives):
            if words:
                groups[adjective_tag + words[0]].append(sample_id)
    for sample_id, error in zip(ids, errors):
        if error:
            groups[error_tag].append(sample_id)
    for tag, tagged in groups.items():  # one bulk write per tag (and id batch)
        for batch in _by_ids(dataset, tagged):
            batch.tag_samples(tag)
    return {tag: len(tagged) for tag, tagged in sorted(groups.items())}, warnings


def compute_quality(
    samples: Any, progress: Callable[[dict[str, Any]], Any] | bool = False, **options: Any
) -> QualityRunSummary:
    """Score a FiftyOne dataset or view with BPCLIP and tag it (see the module docstring).

    Args:
        samples: a dataset or view.
        progress: True for a progress bar, or a callback receiving ``{"progress", "label"}``.
        **options: see :func:`iter_compute_quality` (checkpoint, zero_shot, mode,
            reference_field, score_field, adjectives_field, top_k, tagging, batch_size,
            device, overwrite, run_key, tag_prefix).
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
                bar.set_description(update["label"], refresh=False)  # one redraw per state, not two
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
    """A run's record: when, which model (description, hash, checkpoint, mode), parameters,
    fields, status and (when finished) its summary."""
    if run_key not in _bpclip_runs(dataset):
        raise KeyError(f"no bpclip run {run_key!r} on dataset {dataset.name!r}; runs: {_bpclip_runs(dataset)}")
    info = dataset.get_brain_info(run_key)
    record = {"run_key": run_key, "timestamp": str(info.timestamp), **info.config.serialize()}
    results = dataset.load_brain_results(run_key, load_view=False)
    if results is not None:
        record["summary"] = getattr(results, "summary", None)
        record["finished"] = getattr(results, "finished", None)
    return record


def delete_quality_run(dataset: Any, run_key: str, delete_fields: bool = True) -> None:
    """Delete a run record and (by default) the fields, index and tags it wrote; other runs' stay.

    ``dataset.delete_brain_run(run_key)`` does the same (with the fields).
    """
    from .runs import QualityRun

    get_quality_run(dataset, run_key)  # a KeyError naming the runs there are
    QualityRun.delete_run(dataset, run_key, cleanup=delete_fields)


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
