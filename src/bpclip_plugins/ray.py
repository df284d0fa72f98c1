"""Ray Data adapter: BPCLIP scoring as one ``map_batches`` step of a Ray Data pipeline.

People who curate millions of images often run Ray Data for batch inference already. It
reads path lists or images from object storage, streams them through actors on CPUs and GPUs
across an autoscaling cluster, and writes Parquet. This module does none of that
scheduling: Ray places the actors, assigns their GPUs, retries failed tasks and applies
back-pressure. What we provide is what runs inside each actor: :class:`BPCLIPScorer`, a
callable class that loads one :class:`~bpclip_core.running.engine.QualityEngine` in its
``__init__`` (once per actor) and turns a batch of image paths into the same batch with
result columns added. :func:`score_dataset` plugs it into ``Dataset.map_batches`` with an
actor pool. For one job on GPUs you already hold, ``torchrun`` sharding
(:mod:`bpclip_core.running.sharding`) needs no Ray at all; docs/gpus-and-clusters.md says which to use when.

Every input row gives exactly one output row. A row whose image cannot be scored (a missing
or corrupt file, an empty path, a folder) gets its reason in the ``error`` column and nulls
elsewhere, the engine's own message wherever the engine sees the input. It never raises an
exception that would fail the Ray job. The result columns have a fixed Arrow type, so that
Parquet files written from different blocks share one schema even when every row of a block
failed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bpclip_core.errors import BPCLIPError
from bpclip_core.model.adjectives import goodness_column
from bpclip_core.running.engine import QualityEngine, ScoredInput
from bpclip_core.running.explain import dimension_goodness

try:
    import pyarrow as pa
except ImportError as exc:  # pragma: no cover - pyarrow comes with ray[data]
    raise ImportError("bpclip_plugins.ray needs Ray Data: pip install 'bpclip[ray]'") from exc

if TYPE_CHECKING:
    import ray.data

SCORE_COLUMNS: tuple[str, ...] = ("score", "mos", "top_adjectives", "top_adjective_probabilities")
"""The result columns before the per-dimension ones; ``error`` comes last."""


class BPCLIPScorer:
    """A class-based UDF for ``ray.data.Dataset.map_batches``: one quality model per actor.

    Built once per actor (Ray calls ``__init__`` in the actor, so the model is loaded there):
    on the actor's GPU if Ray gave it one (``num_gpus``), else on the CPU, unless ``device``
    is passed (:func:`actor_device`).
    Each call takes a batch with a column of image paths (and, for a full-reference model, a
    column of reference paths) and returns the batch with these columns added (replacing any
    of the same name): ``score`` and ``mos`` (float), ``top_adjectives`` (the words of
    :attr:`ScoredInput.top_adjectives <bpclip_core.running.engine.ScoredInput>`, in its order),
    ``top_adjective_probabilities`` (their probabilities), one ``<dimension>_goodness`` per quality dimension (e.g.
    ``sharpness_goodness``, in [0, 1]) and ``error`` (null, or why the row was not scored).

    Batches may be ``pyarrow.Table`` (what :func:`score_dataset` asks Ray for: the result
    columns keep their Arrow types), ``pandas.DataFrame`` or a dict of numpy arrays; the
    result has the batch's type.

    Args:
        checkpoint: a checkpoint file or name, resolved in each actor (on a cluster: a path
            every node can read, or a name in each node's checkpoint cache); None: the
            loading precedence (``BPCLIP_CHECKPOINT``, then the bundled default model).
        path_column: the column of image paths.
        reference_column: the column of reference paths (full-reference models only).
        zero_shot, mode, clip_model, allow_download: as for
            :meth:`~bpclip_core.running.engine.QualityEngine.from_checkpoint`.
        **engine_options: :class:`~bpclip_core.running.engine.QualityEngine` options (``device``,
            ``precision``, ``batch_size`` per forward pass, ``num_workers`` decoding
            processes per actor, ``top_k``, ``protocol``, ...).

    Attributes:
        engine: the actor's :class:`~bpclip_core.running.engine.QualityEngine`.
        dimensions: the model's quality dimensions, in the order of their columns.
        schema: the Arrow schema of the result columns.

    Raises:
        ValueError: a full-reference model without ``reference_column``, or a no-reference
            model with one (Ray reports it when the actor starts, before any row is scored).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        path_column: str = "path",
        reference_column: str | None = None,
        zero_shot: bool = False,
        mode: str | None = None,
        clip_model: str | None = None,
        allow_download: bool = False,
        **engine_options: Any,
    ) -> None:
        engine_options.setdefault("device", actor_device())
        self.engine = QualityEngine.from_checkpoint(
            checkpoint, zero_shot, mode, clip_model, allow_download, **engine_options
        )
        if self.engine.mode == "fr" and reference_column is None:
            raise ValueError("this is a full-reference model: pass reference_column, the column of reference paths")
        if self.engine.mode == "nr" and reference_column is not None:
            raise ValueError("this is a no-reference model: it takes no reference_column")
        self.path_column, self.reference_column = path_column, reference_column
        adjectives = self.engine.model.card.adjectives
        self.dimensions: list[str] = list(dimension_goodness(torch.zeros(1, len(adjectives)), adjectives))
        self.schema = pa.schema(
            [
                ("score", pa.float64()),
                ("mos", pa.float64()),
                ("top_adjectives", pa.list_(pa.string())),
                ("top_adjective_probabilities", pa.list_(pa.float64())),
                *((goodness_column(d), pa.float64()) for d in self.dimensions),
                ("error", pa.string()),
            ]
        )

    def __call__(self, batch: Any) -> Any:
        """Score one batch: the batch with the result columns added (see the class docstring)."""
        paths = _column(batch, self.path_column)
        references = None if self.reference_column is None else _column(batch, self.reference_column)
        return _with_columns(batch, self.score_paths(paths, references))

    def score_paths(self, paths: Sequence[Any], references: Sequence[Any] | None = None) -> pa.Table:
        """The result columns for these paths (and references), one row each, in order."""
        problems = [_path_problem(p, self.path_column) for p in paths]
        if references is not None:
            problems = [problem or _path_problem(r, self.reference_column) for problem, r in zip(problems, references)]
        runnable = [i for i, problem in enumerate(problems) if problem is None]
        results = [ScoredInput(str(p), error=problem) for p, problem in zip(paths, problems)]
        if runnable:
            sources = [str(paths[i]) for i in runnable]
            refs = None if references is None else [str(references[i]) for i in runnable]
            try:
                scored = self.engine.score(sources, refs)
            except BPCLIPError as exc:  # a problem of the batch as a whole: each of its rows says so
                scored = [ScoredInput(s, error=str(exc)) for s in sources]
            for i, result in zip(runnable, scored):
                results[i] = result
        return self.results_table(results)

    def results_table(self, results: Sequence[ScoredInput]) -> pa.Table:
        """Results as the result columns, typed by :attr:`schema`."""
        columns: dict[str, list] = {
            "score": [r.score for r in results],
            "mos": [r.mos for r in results],
            "top_adjectives": [[w for w, _ in r.top_adjectives] for r in results],
            "top_adjective_probabilities": [[p for _, p in r.top_adjectives] for r in results],
        }
        for dimension in self.dimensions:
            columns[goodness_column(dimension)] = [r.dimensions.get(dimension) for r in results]
        columns["error"] = [r.error for r in results]
        return pa.Table.from_pydict(columns, schema=self.schema)


def actor_device() -> str:
    """The default device of a scorer: ``auto``, except in a Ray actor that Ray gave no GPU,
    which scores on the CPU. Recent Ray releases no longer hide the node's GPUs from such
    actors (ray-project/ray#54868), so every CPU actor would otherwise load its model onto GPU 0."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return "auto"  # not in an actor (the driver, or no Ray at all)
    return "auto" if ray.get_gpu_ids() else "cpu"


def _path_problem(value: Any, column: str | None) -> str | None:
    """Why a path cell cannot go to the engine as one image (None: it can; the engine reports
    missing and unreadable files itself). A folder would expand into many images."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return f"no path in column {column!r} (the value is {value!r})"
    if os.path.isdir(value):
        return f"{column} {str(value)!r} is a folder, not an image file"
    return None


def _column(batch: Any, name: str) -> list[Any]:
    """One column of a batch as Python values (nulls as None)."""
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch.keys())
    if name not in names:
        raise ValueError(f"the batch has no column {name!r} (its columns: {', '.join(map(str, names))})")
    if isinstance(batch, pa.Table):
        return batch.column(name).to_pylist()
    values = batch[name]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [None if isinstance(v, float) and v != v else v for v in values]  # pandas' NaN for a missing path


def _with_columns(batch: Any, results: pa.Table) -> Any:
    """The batch with the result columns added (replacing any of the same name), in the batch's type."""
    if isinstance(batch, pa.Table):
        kept = batch.drop_columns([n for n in results.column_names if n in batch.column_names])
        for name, column in zip(results.column_names, results.columns):
            kept = kept.append_column(results.schema.field(name), column)
        return kept
    if isinstance(batch, Mapping):  # Ray's "numpy" format
        return {**batch, **{name: _as_numpy(results.column(name)) for name in results.column_names}}
    frame = results.to_pandas()
    frame.index = batch.index
    return batch.assign(**{name: frame[name] for name in results.column_names})


def _as_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A result column as numpy: floats with NaN for nulls; strings, and lists as Python lists, as objects."""
    if not pa.types.is_list(column.type):
        return column.to_numpy(zero_copy_only=False)
    values = np.empty(len(column), dtype=object)
    for i, value in enumerate(column.to_pylist()):  # one by one: lists of one length would broadcast
        values[i] = value
    return values


def score_dataset(
    dataset: ray.data.Dataset,
    checkpoint: str | Path | None = None,
    *,
    path_column: str = "path",
    reference_column: str | None = None,
    actors: int | tuple[int, int] | None = None,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    ray_batch_size: int = 256,
    map_batches_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """``dataset`` with BPCLIP's result columns added, scored lazily by a pool of actors.

    Args:
        dataset: rows with a column of image paths (and references for a full-reference model).
        checkpoint, path_column, reference_column: as for :class:`BPCLIPScorer`.
        actors: the actor pool: ``n`` actors, ``(min, max)`` for an autoscaling pool, or
            None for Ray's default (autoscaling from one actor to what the cluster holds).
        num_gpus: GPUs per actor (e.g. 1; the engine then runs on the actor's GPU).
        num_cpus: CPUs Ray reserves per actor (Ray's default: 1); with ``num_workers``
            decoding processes, reserve ``1 + num_workers``.
        ray_batch_size: rows per call of an actor (large enough to amortise the start of
            the engine's decoding workers; a multiple of the engine's ``batch_size``).
        map_batches_args: further ``map_batches`` arguments (``memory``, ``resources``,
            ``accelerator_type``, ``runtime_env``, ...).
        **options: :class:`BPCLIPScorer`'s options (``zero_shot``, ``mode``, engine options).

    Returns:
        The lazy dataset: write it (``write_parquet``) or iterate it to run the scoring.
    """
    import ray.data

    if isinstance(actors, int):
        compute = ray.data.ActorPoolStrategy(size=actors)
    elif actors is not None:
        compute = ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1])
    else:
        compute = ray.data.ActorPoolStrategy()
    args: dict[str, Any] = {"num_gpus": num_gpus, "num_cpus": num_cpus, **(map_batches_args or {})}
    if "udf_modifying_row_count" in _map_batches_parameters(dataset):
        args.setdefault("udf_modifying_row_count", False)  # one row out per row in: lets Ray push limits down
    return dataset.map_batches(
        BPCLIPScorer,
        batch_size=ray_batch_size,
        batch_format="pyarrow",
        compute=compute,
        fn_constructor_args=(checkpoint,),
        fn_constructor_kwargs={"path_column": path_column, "reference_column": reference_column, **options},
        **args,
    )


def _map_batches_parameters(dataset: Any) -> set[str]:
    """The parameter names of this Ray's ``map_batches`` (they differ between Ray 2.x releases)."""
    import inspect

    return set(inspect.signature(dataset.map_batches).parameters)
