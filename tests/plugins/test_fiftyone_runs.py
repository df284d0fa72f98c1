"""FiftyOne runs that cannot lie (issue 29, item 2): each run records its model, a field never
mixes two models' (or modes') scores, runs are brain runs, the score field is indexed, the
operator shows the worst samples first with their tags, runs can be listed and deleted from the
App, and quality bands are absolute on the model's calibrated scale by default."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from bson import json_util
from fiftyone import ViewField as F
from fiftyone.operators.executor import ExecutionError

from bpclip_core.weights.checkpoint import init_checkpoint, read_metadata
from bpclip_plugins.fiftyone import (
    QualityTagging,
    RunOptionError,
    compute_quality,
    get_quality_run,
    install_plugin,
    iter_compute_quality,
    list_quality_runs,
)
from bpclip_plugins.fiftyone.runs import model_identity
from fiftyone_support import dataset_maker, run_quality, seeded_images

COMPUTE = "@bpclip/quality/compute_quality"
RUNS = "@bpclip/quality/quality_runs"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
PRISTINE = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]


def _with_reference(path, i: int) -> fo.Sample:
    """A sample of that file with itself as its ``reference`` path."""
    return fo.Sample(filepath=str(path), reference=str(path))


@pytest.fixture
def make_dataset(request):
    """``make(paths)``: a throwaway persistent dataset of those files (see ``dataset_maker``)."""
    yield from dataset_maker(f"bpclip-runs-{request.node.name}", _with_reference)


@pytest.fixture
def images(tmp_path) -> list:
    """Six distinct seeded random images."""
    return seeded_images(tmp_path, 6, seed=11)


_run = run_quality


def _requests(result) -> list[dict]:
    """The App operations the operator triggered (notify, set_view ...)."""
    return result.executor.to_json()["requests"]


# ---- 1. the run records its model; another model's or mode's scores are never joined ---------


def test_a_run_records_the_model_its_checkpoint_hash_and_mode(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    record = get_quality_run(dataset, "bpclip_score")
    assert record["model_hash"] == read_metadata(tiny_checkpoints["nr"])["tensor_digest"]
    assert record["checkpoint"] == str(tiny_checkpoints["nr"]) and record["checkpoint_name"] == "tiny-nr"
    assert record["mode"] == "nr" and "UNTRAINED" in record["model"]


def test_a_checkpoint_without_a_digest_is_known_by_the_sha256_of_its_file(tiny_checkpoints, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_checkpoints["nr"]), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        header = handle.metadata()
    metadata = json.loads(header["bpclip"])
    del metadata["tensor_digest"]  # written before digests existed
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"bpclip": json.dumps(metadata)})
    identity = model_identity(str(old), False, "nr")
    assert identity.model_hash == "sha256:" + hashlib.sha256(old.read_bytes()).hexdigest()
    assert model_identity(None, True, "nr").model_hash.startswith("zero-shot:")


def test_fr_gets_its_own_field_and_a_rerun_as_fr_into_the_nr_field_is_refused(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    nr_scores = dataset.values("bpclip_score")
    fr = {"mode": "fr", "reference_field": "reference"}
    with pytest.raises(RunOptionError, match="holds 6 scores of another model") as refused:
        _run(dataset, tiny_checkpoints["fr"], score_field="bpclip_score", **fr)
    assert refused.value.option == "score_field"
    assert "'bpclip_fr_score'" in str(refused.value) and "overwrite" in str(refused.value)
    record = get_quality_run(dataset, "bpclip_score")  # the record still tells the truth
    assert record["mode"] == "nr" and record["model_hash"] == read_metadata(tiny_checkpoints["nr"])["tensor_digest"]
    assert dataset.values("bpclip_score") == nr_scores
    summary = _run(dataset, tiny_checkpoints["fr"], **fr)  # no field named: FR's own default
    assert summary.fields["score"] == "bpclip_fr_score" and summary.scored == 6
    assert get_quality_run(dataset, "bpclip_fr_score")["mode"] == "fr"
    assert dataset.values("bpclip_score") == nr_scores


def test_the_form_refuses_another_models_field_and_says_why(make_dataset, images, tiny_checkpoints):
    install_plugin()
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    params = {"mode": "fr", "reference_field": "reference", "checkpoint": str(tiny_checkpoints["fr"]),
              "score_field": "bpclip_score"}  # fmt: skip
    with pytest.raises(ExecutionError, match="Validation error") as refused:
        foo.execute_operator(COMPUTE, ctx={"dataset": dataset, "params": params})
    assert "Path: score_field" in str(refused.value) and "another model" in str(refused.value)
    assert get_quality_run(dataset, "bpclip_score")["mode"] == "nr"


def test_resuming_with_another_checkpoint_is_refused_and_overwrite_never_mixes(
    make_dataset, images, tiny_checkpoints, tmp_path
):
    dataset = make_dataset(images)
    steps = iter_compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), batch_size=2, write_every=1,
                                 num_workers=0)  # fmt: skip
    next(steps)
    next(steps)  # two scored and written
    steps.close()  # interrupted
    other = init_checkpoint("tiny", "nr", tmp_path / "other-nr.safetensors", random=True, seed=7)
    assert read_metadata(other)["tensor_digest"] != read_metadata(tiny_checkpoints["nr"])["tensor_digest"]
    with pytest.raises(RunOptionError, match="holds 2 scores of another model"):
        _run(dataset, other)
    assert get_quality_run(dataset, "bpclip_score")["status"] == "interrupted"
    summary = _run(dataset, tiny_checkpoints["nr"])  # the same model resumes
    assert (summary.scored, summary.skipped) == (4, 2)
    # overwrite with the other model on a part of the dataset: the rest is cleared, not left mixed
    part = dataset.limit(3)
    summary = _run(part, other, overwrite=True)
    assert set(dataset.exists("bpclip_score").values("id")) == set(part.values("id"))
    assert any("cleared 3 results of the previous model" in w for w in summary.warnings)
    outside = dataset.exclude(part.values("id"))
    assert not [t for tags in outside.values("tags") for t in tags]
    assert get_quality_run(dataset, "bpclip_score")["model_hash"] == read_metadata(other)["tensor_digest"]


# ---- 2. runs are brain runs --------------------------------------------------------------------


def test_runs_are_brain_runs_and_deleting_the_brain_run_cleans_up(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    assert dataset.list_brain_runs() == ["bpclip_score"] and dataset.list_runs() == []
    assert list_quality_runs(dataset) == ["bpclip_score"]
    info = dataset.get_brain_info("bpclip_score")
    assert info.config.method == "bpclip" and info.config.type == "brain"
    assert dataset.load_brain_results("bpclip_score").summary["scored"] == 6
    fresh = fo.load_dataset(dataset.name)  # another process' view of it: read back from the database
    fresh.reload()
    assert fresh.get_brain_info("bpclip_score").config.model_hash.startswith("sha256:")
    dataset.delete_brain_run("bpclip_score")
    schema = dataset.get_field_schema()
    assert "bpclip_score" not in schema and "bpclip_adjectives" not in schema
    assert not dataset.count_sample_tags() and list_quality_runs(dataset) == []


# ---- 3. the App pieces (without a browser: what the operator asks the App to do) -----------------


def test_the_score_field_is_indexed_and_the_index_goes_with_the_run(make_dataset, images, tiny_checkpoints):
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    assert "bpclip_score" in dataset.list_indexes()
    foo_runs = dataset.list_brain_runs()
    dataset.delete_brain_run(foo_runs[0])
    assert "bpclip_score" not in dataset.list_indexes()


def test_after_a_run_the_app_shows_the_worst_first_with_tags(make_dataset, images, tiny_checkpoints):
    install_plugin()
    dataset = make_dataset(images)
    params = {"checkpoint": str(tiny_checkpoints["nr"])}
    result = foo.execute_operator(COMPUTE, ctx={"dataset": dataset, "params": params})
    requests = {r["operator_uri"]: r["params"] for r in _requests(result)}
    assert "tags" in requests["set_active_fields"]["fields"]
    assert "bpclip_score" in requests["set_active_fields"]["fields"]
    view = fo.DatasetView._build(dataset, json_util.loads(json.dumps(requests["set_view"]["view"])))
    scores = view.values("bpclip_score")
    assert scores == sorted(scores) and len(scores) == 6  # ascending: the worst first
    assert "worst first" in requests["notify"]["message"]


def test_the_operators_have_buttons_and_runs_can_be_listed_and_deleted_from_the_app(
    make_dataset, images, tiny_checkpoints
):
    import fiftyone.operators.types as types

    from bpclip_plugins.fiftyone.plugin import ComputeQuality, QualityRuns

    install_plugin()
    assert ComputeQuality().resolve_placement(None).place == types.Places.SAMPLES_GRID_ACTIONS
    assert QualityRuns().resolve_placement(None).view.label == "BPCLIP quality runs"
    dataset = make_dataset(images)
    _run(dataset, tiny_checkpoints["nr"])
    _run(dataset, tiny_checkpoints["nr"], score_field="second", adjectives_field="second_adjectives")

    ctx = SimpleNamespace(dataset=dataset, params={})
    form = QualityRuns().resolve_input(ctx).to_json()
    table = json.dumps(form)
    assert "bpclip_score" in table and "second" in table and "tiny-nr" in table and "completed" in table
    result = foo.execute_operator(RUNS, ctx={"dataset": dataset, "params": {"run_key": "second"}})
    assert result.error is None and result.result == {"deleted": "second"}
    assert list_quality_runs(dataset) == ["bpclip_score"] and "second" not in dataset.get_field_schema()
    notes = [r["params"]["message"] for r in _requests(result) if r["operator_uri"] == "notify"]
    assert notes == ["BPCLIP: deleted run 'second' and its fields second, second_adjectives, second_error and tags"]


# ---- 4. absolute bands by default ----------------------------------------------------------------


def test_absolute_bands_do_not_flag_a_third_of_a_pristine_set(make_dataset, tmp_path):
    dataset = make_dataset([EXAMPLES / name for name in PRISTINE])
    summary = compute_quality(dataset, num_workers=0)  # the bundled model, default bands
    tags = dataset.count_sample_tags()
    assert "quality:low" not in tags and sum(n for t, n in tags.items() if t.startswith("quality:")) == 4
    assert summary.bands.startswith("absolute bands") and "MOS" in summary.bands
    assert get_quality_run(dataset, "bpclip_score")["parameters"]["bands"] == summary.bands
    # a damaged photo among them is low on the absolute scale; quantiles remain an option
    damaged = shutil.copy(EXAMPLES / "coffee_jpeg_q5.jpg", tmp_path / "damaged.jpg")
    dataset.add_sample(fo.Sample(filepath=str(damaged), reference=str(damaged)))
    compute_quality(dataset, num_workers=0)
    assert dataset.match_tags("quality:low").values("filepath") == [str(damaged)]
    compute_quality(dataset, num_workers=0, tagging=QualityTagging(bands="quantiles"), overwrite=True)
    assert len(dataset.match_tags("quality:low")) == 2  # a third of five, whatever they look like
    assert len(dataset.match(F("bpclip_score") < 0.5)) == 1
