"""The ``@bpclip/quality`` FiftyOne plugin: the App face of ``bpclip_plugins.fiftyone``.

The operator maps the form's inputs onto :func:`bpclip_plugins.fiftyone.iter_compute_quality`
and reports its progress; all scoring, writing and tagging happens there.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from bpclip_plugins.fiftyone import BANDS, QualityTagging, iter_compute_quality


def options_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`iter_compute_quality` for the operator's form values."""
    mode = params.get("mode", "nr")
    bands = params.get("bands", "quantiles")
    text = str(params.get("cut_points") or "").strip()
    try:
        cuts = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip()) if text else (1 / 3, 2 / 3)
    except ValueError as exc:
        raise ValueError(f"cut points must be comma-separated numbers, got {text!r}") from exc
    labels = ("low", "medium", "high") if len(cuts) == 2 else tuple(f"band{i}" for i in range(len(cuts) + 1))
    use_zero_shot = params.get("model", "checkpoint") == "zero_shot"
    return {
        "checkpoint": None if use_zero_shot else (params.get("checkpoint") or None),
        "zero_shot": use_zero_shot,
        "mode": mode,
        "reference_field": params.get("reference_field") if mode == "fr" else None,
        "score_field": params.get("score_field") or "bpclip_score",
        "adjectives_field": params.get("adjectives_field") or "bpclip_adjectives",
        "top_k": int(params.get("top_k", 3)),
        "tagging": QualityTagging(bands=bands, cut_points=cuts, labels=labels,
                                  tag_adjectives=bool(params.get("tag_adjectives", True))),
        "batch_size": int(params.get("batch_size", 8)),
        "device": params.get("device") or "auto",
        "overwrite": bool(params.get("overwrite", False)),
    }  # fmt: skip


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

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        modes = types.RadioGroup()
        modes.add_choice("nr", label="No-reference")
        modes.add_choice("fr", label="Full-reference")
        inputs.enum("mode", modes.values(), default="nr", label="Mode", view=modes)
        if ctx.params.get("mode", "nr") == "fr":
            schema = ctx.dataset.get_field_schema() if ctx.dataset is not None else {}
            fields = types.Dropdown()
            for name in sorted(schema):
                fields.add_choice(name, label=name)
            inputs.enum("reference_field", fields.values(), required=True, label="Reference image path field",
                        view=fields)  # fmt: skip
        models = types.RadioGroup()
        models.add_choice("checkpoint", label="BPCLIP checkpoint (default: the bundled model)")
        models.add_choice("zero_shot", label="Zero-shot CLIP (no trained head)")
        inputs.enum("model", models.values(), default="checkpoint", label="Model", view=models)
        if ctx.params.get("model", "checkpoint") == "checkpoint":
            inputs.str(
                "checkpoint",
                label="Checkpoint",
                description="Path or cache name; empty: BPCLIP_CHECKPOINT, the cache, then the bundled default model",
            )
        inputs.str("score_field", default="bpclip_score", label="Score field")
        inputs.str("adjectives_field", default="bpclip_adjectives", label="Adjectives field")
        inputs.int("top_k", default=3, min=1, max=40, label="Dominant adjectives per sample")
        band_choices = types.Dropdown()
        for name in BANDS:
            band_choices.add_choice(name, label=name)
        inputs.enum("bands", band_choices.values(), default="quantiles", label="Quality bands", view=band_choices)
        inputs.str("cut_points", default="0.333,0.667", label="Band cut points (scores or quantiles)")
        inputs.bool("tag_adjectives", default=True, label="Tag the dominant adjective")
        inputs.int("batch_size", default=8, min=1, label="Batch size")
        inputs.str("device", default="auto", label="Device (auto, cpu, cuda, mps)")
        inputs.bool("overwrite", default=False, label="Overwrite existing scores")
        return types.Property(inputs, view=types.View(label="BPCLIP quality"))

    def execute(self, ctx: Any) -> Any:
        options = options_from_params(ctx.params)
        for update in iter_compute_quality(ctx.target_view(), **options):
            if ctx.delegated:
                ctx.set_progress(progress=update["progress"], label=update["label"])
            else:
                yield ctx.trigger("set_progress", {"progress": update["progress"], "label": update["label"]})
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")


def register(plugin: Any) -> None:
    """FiftyOne's plugin entry point."""
    plugin.register(ComputeQuality)
