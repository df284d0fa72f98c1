"""The FiftyOne adapter on hostile views: views that hide the run's fields, views that stop
matching once scores are written, and views with nothing (or almost nothing) to score."""

from __future__ import annotations

import shutil

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone import ViewField as F

from bpclip_plugins.fiftyone import (
    ERROR_TAG,
    NOTHING_TO_SCORE,
    QualityTagging,
    get_quality_run,
    install_plugin,
    list_quality_runs,
)
from fiftyone_support import dataset_maker, run_quality, seeded_images

URI = "@bpclip/quality/compute_quality"
UNTRAINED = "is the model trained"
QUANTILES = QualityTagging(bands="quantiles")  # the bands whose 0/1/tied-sample warnings are checked here


def _labelled(path, i: int) -> fo.Sample:
    """A sample of that file, labelled alternately "a" and "b"."""
    return fo.Sample(filepath=str(path), ground_truth=fo.Classification(label="ab"[i % 2]))


@pytest.fixture
def make_dataset(request):
    """``make(paths)``: a throwaway persistent dataset of those files (see ``dataset_maker``)."""
    yield from dataset_maker(
        f"bpclip-hostile-{request.node.name}",
        _labelled,
    )


@pytest.fixture
def images(tmp_path) -> list:
    """Five distinct seeded random images on disk."""
    return seeded_images(tmp_path, 5, seed=3)


_run = run_quality


def _notifications(result) -> list[dict]:
    """The operator's notify messages, as the App would show them."""
    requests = result.executor.to_json()["requests"]
    return [r["params"] for r in requests if r["operator_uri"] == "notify"]


VIEWS = {
    "select_no_fields": lambda ds: ds.select_fields(),
    "select_ground_truth": lambda ds: ds.select_fields("ground_truth"),
    "exclude_ground_truth": lambda ds: ds.exclude_fields("ground_truth"),
    "match": lambda ds: ds.match(F("ground_truth.label") == "a"),
    "filter_labels": lambda ds: ds.filter_labels("ground_truth", F("label") == "b"),
    "select_then_limit": lambda ds: ds.select_fields("ground_truth").limit(3),
    "unscored_only": lambda ds: ds.match(F("bpclip_score") == None),  # noqa: E711 (empty once scored)
}


# ---- item 4: a run on any view scores, writes, tags and records exactly that view ----------


@pytest.mark.parametrize("make_view", VIEWS.values(), ids=VIEWS.keys())
def test_a_view_is_scored_tagged_and_recorded_and_a_rerun_skips_it(make_dataset, images, tiny_checkpoints, make_view):
    dataset = make_dataset(images)
    view = make_view(dataset)
    expected = set(view.values("id"))
    summary = _run(view, tiny_checkpoints["nr"])
    assert (summary.total, summary.scored, summary.failed, summary.skipped) == (len(expected), len(expected), 0, 0)
    assert not summary.warnings
    assert set(dataset.exists("bpclip_score").values("id")) == expected  # on the dataset, exactly the view
    for sample_id, tags in zip(*dataset.values(["id", "tags"])):
        ours = sorted(t.split(":")[0] for t in tags)
        assert ours == (["adjective", "quality"] if sample_id in expected else []), (sample_id, tags)
    assert get_quality_run(dataset, "bpclip_score")["status"] == "completed"
    scores, tags = dataset.values("bpclip_score"), dataset.values("tags")

    view = make_view(dataset)
    remaining = len(view)  # the unscored-only view is empty now
    rerun = _run(view, tiny_checkpoints["nr"])
    assert (rerun.total, rerun.scored, rerun.failed, rerun.skipped) == (remaining, 0, 0, remaining)
    assert dataset.values("bpclip_score") == scores and dataset.values("tags") == tags
    assert get_quality_run(dataset, "bpclip_score")["status"] == "completed"


def test_full_reference_on_a_view_that_hides_the_reference_field(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images[:3])
    dataset.set_values("reference", dataset.values("filepath"))
    summary = _run(dataset.select_fields(), tiny_checkpoints["fr"], mode="fr", reference_field="reference")
    assert (summary.scored, summary.failed) == (3, 0)
    assert None not in dataset.values("bpclip_fr_score")  # FR's default field


def test_the_operator_scores_a_select_fields_view(make_dataset, images, tiny_checkpoints):
    install_plugin()
    dataset = make_dataset(images)
    params = {"checkpoint": str(tiny_checkpoints["nr"]), "bands": "thresholds", "cut_points": "-10,10"}
    view = dataset.select_fields("ground_truth").limit(2)
    result = foo.execute_operator(URI, ctx={"dataset": dataset, "view": view, "params": params})
    (note,) = _notifications(result)
    assert note["variant"] == "success" and "2 scored, 0 failed" in note["message"]
    assert dataset.count_sample_tags()["quality:medium"] == 2
    assert get_quality_run(dataset, "bpclip_score")["status"] == "completed"


# ---- item 11: "all scores are equal ... is the model trained?" only for 2+ equal scores -------


def test_two_equal_scores_warn_that_the_model_may_be_untrained(make_dataset, images, tmp_path, tiny_checkpoints):
    twin = tmp_path / "twin.png"
    shutil.copy(images[0], twin)
    dataset = make_dataset([images[0], twin])
    summary = _run(dataset, tiny_checkpoints["nr"], tagging=QUANTILES)
    assert summary.scored == 2 and len(set(dataset.values("bpclip_score"))) == 1
    assert len(summary.warnings) == 1 and UNTRAINED in summary.warnings[0] and UNTRAINED in summary.message()
    assert not [t for t in dataset.count_sample_tags() if t.startswith("quality:")]
    # absolute bands (the default) band the two on the model's scale, and still say they tie
    summary = _run(dataset, tiny_checkpoints["nr"], overwrite=True)
    assert len(summary.warnings) == 1 and UNTRAINED in summary.warnings[0]
    assert sum(n for t, n in dataset.count_sample_tags().items() if t.startswith("quality:")) == 2


def test_distinct_images_get_distinct_scores_and_no_warning(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images[:2])  # the tiny random model does tell these two apart
    summary = _run(dataset, tiny_checkpoints["nr"])
    assert len(set(dataset.values("bpclip_score"))) == 2 and not summary.warnings


def test_a_single_sample_is_not_blamed_on_the_model(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images)
    summary = _run(dataset.limit(1), tiny_checkpoints["nr"], tagging=QUANTILES)
    assert summary.scored == 1
    assert not any(UNTRAINED in w for w in summary.warnings)
    assert "at least 2 scored samples" in summary.warnings[0]
    # an absolute band needs no other sample
    summary = _run(dataset.limit(1), tiny_checkpoints["nr"], overwrite=True)
    assert not summary.warnings and sum(summary.tags[t] for t in summary.tags if t.startswith("quality:")) == 1


def test_all_media_missing_reports_the_failures_not_the_model(make_dataset, tmp_path, tiny_checkpoints):
    dataset = make_dataset([tmp_path / "gone0.png", tmp_path / "gone1.png"])
    summary = _run(dataset, tiny_checkpoints["nr"])
    assert (summary.scored, summary.failed) == (0, 2)
    assert all("no such file" in e for e in dataset.values("bpclip_score_error"))
    assert dataset.count_sample_tags()[ERROR_TAG] == 2
    assert not any(UNTRAINED in w for w in summary.warnings)
    assert "nothing was scored: 2 of 2 samples failed" in summary.message()
    assert get_quality_run(dataset, "bpclip_score")["status"] == "completed"


def test_an_empty_view_says_so_and_leaves_the_dataset_alone(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images[:2])
    summary = _run(dataset.match(F("filepath") == "nowhere"), tiny_checkpoints["nr"])
    assert (summary.total, summary.scored, summary.failed) == (0, 0, 0)
    assert summary.warnings == [NOTHING_TO_SCORE] and NOTHING_TO_SCORE in summary.message()
    assert list_quality_runs(dataset) == [] and "bpclip_score" not in dataset.get_field_schema()


def test_the_operator_shows_what_happened(make_dataset, images, tmp_path, tiny_checkpoints):
    install_plugin()
    dataset = make_dataset([images[0], tmp_path / "gone.png"])
    params = {"checkpoint": str(tiny_checkpoints["nr"]), "bands": "quantiles"}
    for view, expected in [
        (dataset.match(F("filepath") == "nowhere"), NOTHING_TO_SCORE),
        (dataset.match(F("filepath").contains_str("gone")), "nothing was scored"),
        (dataset.match(F("filepath").contains_str("img0")), "at least 2 scored samples"),
    ]:
        result = foo.execute_operator(URI, ctx={"dataset": dataset, "view": view, "params": params})
        (note,) = _notifications(result)
        assert note["variant"] == "warning" and expected in note["message"] and UNTRAINED not in note["message"]
