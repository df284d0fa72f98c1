"""The ``@bpclip/quality`` FiftyOne plugin: the App face of ``bpclip_plugins.fiftyone``.

The operator maps the form's inputs onto :func:`bpclip_plugins.fiftyone.iter_compute_quality`
and reports its progress; all scoring, writing and tagging happens there.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from bpclip_plugins.fiftyone import (
    DEFAULT_CUT_POINTS,
    QualityTagging,
    RunOptionError,
    check_run_options,
    default_fields,
    default_tag_prefix,
    delete_quality_run,
    get_quality_run,
    iter_compute_quality,
    list_quality_runs,
)

BAND_LABELS = {
    "thresholds": "absolute: cut points on the model's calibrated score (0 to 1, 1 = best)",
    "quantiles": "quantiles of this run's scores",
    "none": "none",
}


def options_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`iter_compute_quality` for the operator's form values."""
    mode = params.get("mode", "nr")
    bands = params.get("bands", "thresholds")
    text = str(params.get("cut_points") or "").strip()
    try:
        cuts = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip()) if text else None
    except ValueError as exc:
        raise ValueError(f"cut points must be comma-separated numbers, got {text!r}") from exc
    three = cuts is None or len(cuts) == 2
    labels = ("low", "medium", "high") if three else tuple(f"band{i}" for i in range(len(cuts) + 1))
    use_zero_shot = params.get("model", "checkpoint") == "zero_shot"
    return {
        "checkpoint": None if use_zero_shot else (params.get("checkpoint") or None),
        "zero_shot": use_zero_shot,
        "mode": mode,
        "reference_field": params.get("reference_field") if mode == "fr" else None,
        "score_field": params.get("score_field") or default_fields(mode)[0],
        "adjectives_field": params.get("adjectives_field") or default_fields(mode)[1],
        "top_k": int(params.get("top_k", 3)),
        "tagging": QualityTagging(bands=bands, cut_points=cuts, labels=labels,
                                  tag_adjectives=bool(params.get("tag_adjectives", True))),
        "batch_size": int(params.get("batch_size", 8)),
        "device": params.get("device") or "auto",
        "overwrite": bool(params.get("overwrite", False)),
        "tag_prefix": params.get("tag_prefix") or None,
    }  # fmt: skip


def form_problem(ctx: Any) -> tuple[str, str] | None:
    """(form field, reason) of the first problem that would stop a run, or None.

    Checked while the form is filled in, so the App shows the reason under the field and
    keeps Execute disabled, instead of a run that fails out of sight.
    """
    from bpclip_core.weights.checkpoint import read_metadata, resolve_checkpoint

    try:
        options = options_from_params(ctx.params)
    except ValueError as exc:
        return "cut_points", str(exc)
    if ctx.dataset is None:
        return None
    if not options["zero_shot"]:
        try:
            path = resolve_checkpoint(options["checkpoint"], options["mode"])
            stored_mode = read_metadata(path).get("config", {}).get("mode", options["mode"])
        except Exception as exc:  # any reason the model cannot be loaded is the form's to show
            return "checkpoint", f"{type(exc).__name__}: {exc}"
        if stored_mode != options["mode"]:
            asked = options["mode"].upper()
            return "checkpoint", f"{path} is a {stored_mode.upper()} checkpoint; the form asks for {asked}"
    prefix = options["tag_prefix"]
    try:
        check_run_options(
            ctx.dataset, options["checkpoint"], options["zero_shot"], options["mode"], options["reference_field"],
            options["score_field"], options["adjectives_field"], options["score_field"],
            default_tag_prefix(options["score_field"]) if prefix is None else prefix, options["overwrite"],
        )  # fmt: skip
    except RunOptionError as exc:
        return exc.option, str(exc)
    return None


def worst_first(view: Any, score_field: str) -> Any:
    """The scored samples of ``view``, worst score first (unscored ones would sort before them)."""
    return view.exists(score_field).sort_by(score_field)


def _invalid(problem: tuple[str, str] | None) -> dict[str, dict[str, Any]]:
    """Form field -> the ``invalid``/``error_message`` keywords that mark it in the App."""
    return {} if problem is None else {problem[0]: {"invalid": True, "error_message": problem[1]}}


def _path_fields(ctx: Any) -> list[str]:
    """The dataset's string fields other than ``filepath``: candidates for reference paths."""
    import fiftyone as fo

    if ctx.dataset is None:
        return []
    schema = ctx.dataset.get_field_schema()
    return sorted(name for name, kind in schema.items() if isinstance(kind, fo.StringField) and name != "filepath")


class ComputeQuality(foo.Operator):
    """Score the target samples with BPCLIP and tag them."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="compute_quality",
            label="BPCLIP: compute image quality",
            description="Perceptual quality scores, dominant quality adjectives and quality-band tags",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_placement(self, ctx: Any) -> types.Placement:
        """A "BPCLIP quality" button in the samples grid's actions row."""
        return types.Placement(
            types.Places.SAMPLES_GRID_ACTIONS,
            types.Button(label="BPCLIP quality", icon="high_quality", prompt=True),  # a Material icon,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        invalid = _invalid(form_problem(ctx))
        inputs = types.Object()
        inputs.view_target(ctx)
        modes = types.RadioGroup()
        modes.add_choice("nr", label="No-reference")
        modes.add_choice("fr", label="Full-reference")
        inputs.enum("mode", modes.values(), default="nr", label="Mode", view=modes, **invalid.get("mode", {}))
        if ctx.params.get("mode", "nr") == "fr":
            fields = types.Dropdown()
            for name in _path_fields(ctx):  # reference paths are strings
                fields.add_choice(name, label=name)
            inputs.enum("reference_field", fields.values(), required=True, label="Reference image path field",
                        view=fields, **invalid.get("reference_field", {}))  # fmt: skip
        models = types.RadioGroup()
        models.add_choice("checkpoint", label="BPCLIP checkpoint (default: the bundled model)")
        models.add_choice("zero_shot", label="Zero-shot CLIP (no trained head)")
        inputs.enum(
            "model", models.values(), default="checkpoint", label="Model", view=models, **invalid.get("model", {})
        )
        if ctx.params.get("model", "checkpoint") == "checkpoint":
            inputs.str(
                "checkpoint",
                label="Checkpoint",
                description="Path or cache name; empty: BPCLIP_CHECKPOINT, the cache, then the bundled default model",
                **invalid.get("checkpoint", {}),
            )
        score_default, adjectives_default = default_fields(ctx.params.get("mode", "nr"))
        inputs.str("score_field", label="Score field", description=f"empty: {score_default}",
                   **invalid.get("score_field", {}))  # fmt: skip
        inputs.str("adjectives_field", label="Adjectives field", description=f"empty: {adjectives_default}",
                   **invalid.get("adjectives_field", {}))  # fmt: skip
        inputs.str(
            "tag_prefix", label="Tag prefix",
            description="Prefix of this run's tags; empty: none for bpclip_score, else '<score field>/'",
            **invalid.get("tag_prefix", {}),
        )  # fmt: skip
        inputs.int("top_k", default=3, min=1, max=40, label="Dominant adjectives per sample")
        band_choices = types.Dropdown()
        for name, label in BAND_LABELS.items():
            band_choices.add_choice(name, label=label)
        inputs.enum("bands", band_choices.values(), default="thresholds", label="Quality bands", view=band_choices)
        bands = ctx.params.get("bands", "thresholds")
        cuts = ",".join(f"{c:.3g}" for c in DEFAULT_CUT_POINTS.get(bands, DEFAULT_CUT_POINTS["thresholds"]))
        inputs.str("cut_points", label="Band cut points (scores or quantiles)", description=f"empty: {cuts}",
                   **invalid.get("cut_points", {}))  # fmt: skip
        inputs.bool("tag_adjectives", default=True, label="Tag the dominant adjective")
        inputs.int("batch_size", default=8, min=1, label="Batch size")
        inputs.str("device", default="auto", label="Device (auto, cpu, cuda, mps)")
        inputs.bool("overwrite", default=False, label="Overwrite existing scores", **invalid.get("overwrite", {}))
        return types.Property(inputs, view=types.View(label="BPCLIP quality"))

    def execute(self, ctx: Any) -> Any:
        """Run :func:`iter_compute_quality`; the outcome, good or bad, is shown in the App."""
        options = options_from_params(ctx.params)
        steps = iter_compute_quality(ctx.target_view(), **options)
        try:
            while True:
                update = next(steps)
                if ctx.delegated:
                    ctx.set_progress(progress=update["progress"], label=update["label"])
                else:
                    yield ctx.trigger("set_progress", {"progress": update["progress"], "label": update["label"]})
        except StopIteration as stop:
            summary = stop.value
        except Exception as exc:
            if ctx.delegated:  # the delegated run is marked failed with this reason
                raise
            yield ctx.ops.notify(f"BPCLIP failed: {exc}", variant="error")
            return
        if ctx.delegated:  # its last progress label is summary.message()
            return
        if not summary.total:  # an empty view: nothing ran, no fields to show
            yield ctx.ops.notify("BPCLIP: " + "; ".join(summary.warnings), variant="warning")
            return
        fields = [summary.fields["score"], summary.fields["adjectives"]]
        yield ctx.ops.reload_dataset()
        yield ctx.ops.set_view(view=worst_first(ctx.target_view(), fields[0]))  # the worst images first
        yield ctx.ops.set_active_fields(fields=[*fields, "tags"])  # the new fields and the tags shown
        message = (
            f"BPCLIP ({summary.model}): {summary.scored} scored, {summary.failed} failed, "
            f"{summary.skipped} skipped; scores in '{fields[0]}', worst first"
        )
        failed = f" (reasons in '{summary.fields['error']}')" if summary.failed else ""
        warning = "; ".join(summary.warnings)
        variant = "warning" if summary.failed or warning else "success"
        yield ctx.ops.notify(message + failed + (f". {warning}" if warning else ""), variant=variant)


def runs_table(dataset: Any) -> str:
    """The dataset's quality runs as a Markdown table (model, checkpoint, mode, status, counts)."""
    rows = ["| run | model (checkpoint digest) | mode | status | scored / failed / skipped | finished |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for key in list_quality_runs(dataset):
        record = get_quality_run(dataset, key)
        summary = record.get("summary") or {}
        counts = " / ".join(str(summary.get(k, "-")) for k in ("scored", "failed", "skipped"))
        model = f"{record.get('checkpoint_name')} `{str(record.get('model_hash'))[:19]}…`"
        finished = str(record.get("finished") or "-").replace("T", " ")[:16]
        rows.append(f"| {key} | {model} | {str(record.get('mode')).upper()} | {record['status']} | {counts} | "
                    f"{finished} |")  # fmt: skip
    return "\n".join(rows)


class QualityRuns(foo.Operator):
    """List the dataset's BPCLIP quality runs and delete one (its fields, index and tags too)."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="quality_runs",
            label="BPCLIP: list or delete quality runs",
            description="The quality runs recorded on the dataset; delete one with its fields and tags",
            dynamic=True,
        )

    def resolve_placement(self, ctx: Any) -> types.Placement:
        """A button beside it, among the grid's secondary actions."""
        return types.Placement(
            types.Places.SAMPLES_GRID_SECONDARY_ACTIONS,
            types.Button(label="BPCLIP quality runs", icon="manage_search", prompt=True),
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        runs = list_quality_runs(ctx.dataset) if ctx.dataset is not None else []
        if not runs:
            inputs.view("no_runs", types.Warning(label="No BPCLIP quality runs on this dataset"))
            return types.Property(inputs, view=types.View(label="BPCLIP quality runs"))
        inputs.md(runs_table(ctx.dataset), name="runs")
        choices = types.Dropdown()
        for key in runs:
            choices.add_choice(key, label=key)
        inputs.enum("run_key", choices.values(), required=True, label="Run to delete", view=choices)
        inputs.bool("delete_fields", default=True, label="Also delete its fields, index and tags")
        return types.Property(inputs, view=types.View(label="BPCLIP quality runs"))

    def execute(self, ctx: Any) -> Any:
        """Delete the chosen run; the App is told and reloaded."""
        key = ctx.params.get("run_key")
        if not key:
            ctx.ops.notify("BPCLIP: no run chosen, nothing deleted", variant="warning")
            return {"deleted": None}
        fields = get_quality_run(ctx.dataset, key)["fields"]
        delete_fields = bool(ctx.params.get("delete_fields", True))
        delete_quality_run(ctx.dataset, key, delete_fields=delete_fields)
        ctx.ops.reload_dataset()
        removed = f" and its fields {', '.join(fields)} and tags" if delete_fields else " (fields kept)"
        ctx.ops.notify(f"BPCLIP: deleted run '{key}'{removed}", variant="success")
        return {"deleted": key}


def register(plugin: Any) -> None:
    """FiftyOne's plugin entry point."""
    plugin.register(ComputeQuality)
    plugin.register(QualityRuns)
