"""The FiftyOne plugin at two levels: its logic, and a real database (FiftyOne's own mongod)
running the operator through execute_operator, immediately and delegated."""

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError
from PIL import Image

from bpclip_plugins.fiftyone import (
    ERROR_TAG,
    QualityTagging,
    band_labels,
    bands_are_meaningful,
    compute_quality,
    delete_quality_run,
    get_quality_run,
    install_plugin,
    iter_compute_quality,
    list_quality_runs,
)
from bpclip_plugins.fiftyone.plugin import options_from_params

URI = "@bpclip/quality/compute_quality"


@pytest.fixture
def dataset(tmp_path, request):
    """A persistent dataset of 6 good images, one corrupt file and one missing file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(6):
        path = folder / f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths += [folder / "corrupt.jpg", folder / "missing.png"]
    name = f"bpclip-test-{request.node.name}"[:100]
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    ds.add_samples([fo.Sample(filepath=str(p)) for p in paths])
    yield ds
    ds.delete()


def _by_name(ds, field):
    return {s.filepath.rsplit("/", 1)[1]: s[field] for s in ds}


# ---- level 1: logic -------------------------------------------------------------------


def test_options_from_form_params():
    options = options_from_params(
        {"mode": "fr", "reference_field": "ref", "model": "zero_shot", "cut_points": "0.2, 0.8"}
    )
    assert options["zero_shot"] and options["checkpoint"] is None and options["reference_field"] == "ref"
    assert options["tagging"].cut_points == (0.2, 0.8) and options["tagging"].labels == ("low", "medium", "high")
    defaults = options_from_params({})
    assert defaults["mode"] == "nr" and defaults["score_field"] == "bpclip_score" and not defaults["overwrite"]
    assert options_from_params({"cut_points": "0.5"})["tagging"].labels == ("band0", "band1")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        options_from_params({"cut_points": "low,high"})


def test_band_labels_by_thresholds_and_quantiles():
    scores = [0.1, None, 0.5, 0.9, 0.3]
    thresholds = QualityTagging(bands="thresholds", cut_points=(0.25, 0.6))
    assert band_labels(scores, thresholds) == ["low", None, "medium", "high", "medium"]
    quantiles = QualityTagging(bands="quantiles", cut_points=(0.5,), labels=("worse", "better"))
    assert band_labels(scores, quantiles) == ["worse", None, "better", "better", "worse"]
    assert band_labels(scores, QualityTagging(bands="none")) == [None] * 5
    with pytest.raises(ValueError, match="labels"):
        QualityTagging(cut_points=(0.5,))
    with pytest.raises(ValueError, match="increase"):
        QualityTagging(cut_points=(0.6, 0.2))


# ---- level 2: a real database -----------------------------------------------------------


def test_scores_adjectives_errors_tags_and_run_record(dataset, tiny_checkpoints):
    summary = compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), batch_size=2, num_workers=0)
    assert (summary.total, summary.scored, summary.failed, summary.skipped) == (8, 6, 2, 0)
    scores = _by_name(dataset, "bpclip_score")
    errors = _by_name(dataset, "bpclip_score_error")
    assert all(isinstance(scores[f"good{i}.png"], float) for i in range(6))
    assert scores["corrupt.jpg"] is None and "not an image file" in errors["corrupt.jpg"]
    assert scores["missing.png"] is None and "no such file" in errors["missing.png"]
    assert all(len(a) == 3 for a in dataset.match(fo.ViewField("bpclip_score") != None).values("bpclip_adjectives"))  # noqa: E711
    tags = dataset.count_sample_tags()
    assert tags[ERROR_TAG] == 2
    # the random model tells the images apart a little: the default quantile bands tag each scored one
    assert sum(n for t, n in tags.items() if t.startswith("quality:")) == 6 and not summary.warnings
    assert sum(n for t, n in tags.items() if t.startswith("adjective:")) == 6
    assert list_quality_runs(dataset) == ["bpclip_score"]
    record = get_quality_run(dataset, "bpclip_score")
    assert record["status"] == "completed" and "UNTRAINED" in record["model"]
    assert record["summary"]["scored"] == 6 and record["parameters"]["batch_size"] == 2
    delete_quality_run(dataset, "bpclip_score")
    assert "bpclip_score" not in dataset.get_field_schema() and ERROR_TAG not in dataset.count_sample_tags()
    assert list_quality_runs(dataset) == []


def test_existing_fields_are_never_clobbered(dataset, tiny_checkpoints):
    dataset.set_values("bpclip_score", [0.5] * len(dataset))
    with pytest.raises(ValueError, match="already exists .* something other than bpclip"):
        compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]))
    assert dataset.values("bpclip_score") == [0.5] * 8
    summary = compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), score_field="quality", num_workers=0)
    assert summary.scored == 6 and dataset.values("bpclip_score") == [0.5] * 8
    compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), overwrite=True, num_workers=0)
    assert dataset.values("bpclip_score") != [0.5] * 8


def test_an_interrupted_run_keeps_its_writes_and_a_rerun_scores_the_rest(dataset, tiny_checkpoints):
    steps = iter_compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), batch_size=2, write_every=1,
                                 num_workers=0)  # fmt: skip
    next(steps)  # start
    next(steps)  # the first batch of 2 is scored and written
    steps.close()  # killed here
    written = [s for s in dataset.values("bpclip_score") if s is not None]
    assert len(written) == 2
    summary = compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), num_workers=0)
    assert summary.skipped == 2 and summary.scored == 4 and summary.failed == 2
    assert get_quality_run(dataset, "bpclip_score")["status"] == "completed"


def test_one_bulk_write_per_batch_or_less(dataset, tiny_checkpoints, monkeypatch):
    calls = []
    original = fo.Dataset.set_values

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fo.Dataset, "set_values", counting)
    compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), batch_size=1, num_workers=0)
    assert 0 < len(calls) <= 8  # 8 batches of one sample


def test_full_reference_samples_without_reference_are_reported(dataset, tiny_checkpoints):
    paths = dataset.values("filepath")
    references = [p if i < 4 else None for i, p in enumerate(paths)]
    dataset.set_values("reference", references)
    summary = compute_quality(dataset, checkpoint=str(tiny_checkpoints["fr"]), mode="fr", reference_field="reference",
                              num_workers=0)  # fmt: skip
    assert summary.scored == 4 and summary.failed == 4
    errors = _by_name(dataset, "bpclip_fr_score_error")  # FR has its own default fields
    assert "no reference image" in errors["good5.png"]
    with pytest.raises(ValueError, match="reference_field"):
        compute_quality(dataset, checkpoint=str(tiny_checkpoints["fr"]), mode="fr")


def test_operator_runs_immediately_and_delegated(dataset, tiny_checkpoints):
    from fiftyone.operators.delegated import DelegatedOperationService

    target = install_plugin()
    assert (target / "fiftyone.yml").is_file()
    assert "@bpclip/quality" in [p.name for p in fo.plugins.list_plugins()]
    params = {"checkpoint": str(tiny_checkpoints["nr"]), "batch_size": 2, "bands": "thresholds", "cut_points": "-10,10"}
    result = foo.execute_operator(URI, ctx={"dataset": dataset, "view": dataset.limit(3), "params": params})
    assert result.error is None
    assert sum(s is not None for s in dataset.values("bpclip_score")) == 3
    assert dataset.count_sample_tags()["quality:medium"] == 3

    params = dict(params, score_field="delegated_score", adjectives_field="delegated_adjectives")
    queued = foo.execute_operator(URI, ctx={"dataset": dataset, "params": params, "request_delegation": True})
    assert queued.delegated
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=dataset.name)
    operation = service.get(queued.result["id"])
    assert operation.run_state == "completed", (
        operation.run_state,
        operation.result.error,
        operation.result.error_message,
    )
    assert operation.status.progress == pytest.approx(1.0)
    assert sum(s is not None for s in dataset.values("delegated_score")) == 6
    assert set(list_quality_runs(dataset)) == {"bpclip_score", "delegated_score"}


def test_the_default_form_scores_with_the_bundled_model(dataset):
    install_plugin()
    result = foo.execute_operator(URI, ctx={"dataset": dataset, "params": {}})  # nothing chosen in the form
    assert result.error is None
    scores = [s for s in dataset.values("bpclip_score") if s is not None]
    assert len(scores) == 6 and all(0 <= s <= 1 for s in scores)
    assert "bundled default model" in get_quality_run(dataset, "bpclip_score")["model"]


def test_install_command_links_or_copies_the_plugin(tmp_path, capsys):
    from bpclip_core.cli import main

    assert main(["fiftyone", "install", "--plugins-dir", str(tmp_path / "plugins")]) == 0
    target = tmp_path / "plugins" / "bpclip" / "quality"
    assert target.is_symlink() and (target / "fiftyone.yml").is_file()
    assert str(target) in capsys.readouterr().out
    assert main(["fiftyone", "install", "--plugins-dir", str(tmp_path / "plugins"), "--copy"]) == 0
    assert not target.is_symlink() and (target / "__init__.py").is_file()


def test_bands_over_tied_scores_are_refused_not_invented():
    quantiles = QualityTagging(bands="quantiles")
    assert not bands_are_meaningful([0.5, 0.5 + 1e-7, None, 0.5], quantiles)
    assert bands_are_meaningful([0.5, 0.6], quantiles)
    assert bands_are_meaningful([0.5, 0.5], QualityTagging(bands="thresholds", cut_points=(0.3, 0.6)))


def test_quantile_bands_over_scores_that_all_tie_are_refused(dataset, tmp_path):
    from bpclip_core import preset
    from bpclip_core.weights.checkpoint import init_checkpoint

    # CLIP's 0.01 saturates the tiny model's softmax: one-hot probabilities, every image alike
    saturated = preset("tiny", similarity_temperature=0.01)
    checkpoint = init_checkpoint(saturated, "nr", tmp_path / "saturated.safetensors", random=True)
    quantiles = QualityTagging(bands="quantiles")
    summary = compute_quality(dataset, checkpoint=str(checkpoint), tagging=quantiles, num_workers=0)
    tags = dataset.count_sample_tags()
    assert summary.scored == 6 and not [t for t in tags if t.startswith("quality:")]
    assert "no quality bands" in summary.warnings[0]
    # absolute bands do band tied scores (each is on the model's scale), and still say they tie
    summary = compute_quality(dataset, checkpoint=str(checkpoint), overwrite=True, num_workers=0)
    assert sum(n for t, n in dataset.count_sample_tags().items() if t.startswith("quality:")) == 6
    assert "is the model trained" in summary.warnings[0]


def test_each_run_owns_its_tags(dataset, tiny_checkpoints):
    nr = str(tiny_checkpoints["nr"])
    thresholds = QualityTagging(bands="thresholds", cut_points=(-10, 10))  # every score is "medium"
    compute_quality(dataset, checkpoint=nr, tagging=thresholds, num_workers=0)
    other = compute_quality(dataset, checkpoint=nr, score_field="second_score", adjectives_field="second_adj",
                            tagging=thresholds, num_workers=0)  # fmt: skip
    tags = dataset.count_sample_tags()
    assert tags["quality:medium"] == 6 and tags["second_score/quality:medium"] == 6
    assert tags[ERROR_TAG] == 2 and tags["second_score/" + ERROR_TAG] == 2
    assert set(other.tags) <= {t for t in tags if t.startswith("second_score/")}
    # a rerun of the first run replaces only its own tags
    compute_quality(dataset, checkpoint=nr, overwrite=True, tagging=QualityTagging(bands="none"), num_workers=0)
    tags = dataset.count_sample_tags()
    assert "quality:medium" not in tags and tags["second_score/quality:medium"] == 6
    delete_quality_run(dataset, "bpclip_score")
    tags = dataset.count_sample_tags()
    assert not [t for t in tags if not t.startswith("second_score/")]  # the first run's tags are gone ...
    assert tags["second_score/quality:medium"] == 6 and tags["second_score/" + ERROR_TAG] == 2  # ... the other's stay
    with pytest.raises(ValueError, match="tag prefix"):
        compute_quality(dataset, checkpoint=nr, score_field="third", tag_prefix="second_score/", num_workers=0)


def test_results_are_keyed_to_their_sample_when_a_filepath_is_a_folder(dataset, tiny_checkpoints, tmp_path):
    from bpclip_core.running.engine import QualityEngine, load_quality_model

    folder = tmp_path / "a-folder.png"  # FiftyOne takes the media type from the name
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):  # a folder of images: expanding it would shift every later result
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"inner{i}.png")
    first = dataset.first()
    dataset.add_sample(fo.Sample(filepath=str(folder)))
    summary = compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), batch_size=2, num_workers=0)
    assert (summary.scored, summary.failed) == (6, 3)
    errors = _by_name(dataset, "bpclip_score_error")
    assert "is a folder" in errors["a-folder.png"] and _by_name(dataset, "bpclip_score")["a-folder.png"] is None
    engine = QualityEngine(load_quality_model(tiny_checkpoints["nr"]), device="cpu", num_workers=0)
    for sample in dataset.match(fo.ViewField("bpclip_score") != None):  # noqa: E711
        assert sample["bpclip_score"] == pytest.approx(engine.score([sample.filepath])[0].score, abs=1e-6)
    assert first.id in dataset.match(fo.ViewField("bpclip_score") != None).values("id")  # noqa: E711


def test_the_error_field_appears_only_when_something_failed(dataset, tiny_checkpoints):
    good = dataset.match(fo.ViewField("filepath").contains_str("good"))
    summary = compute_quality(good, checkpoint=str(tiny_checkpoints["nr"]), num_workers=0)
    assert summary.failed == 0 and "bpclip_score_error" not in dataset.get_field_schema()
    assert ERROR_TAG not in dataset.count_sample_tags()
    compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), num_workers=0)  # the rest: two fail
    assert sum(e is not None for e in dataset.values("bpclip_score_error")) == 2


def test_a_failure_during_a_run_marks_it_failed(dataset, tiny_checkpoints, monkeypatch):
    from bpclip_core.running.engine import QualityEngine

    def broken(self, *args, **kwargs):
        raise RuntimeError("the card fell out")
        yield  # pragma: no cover

    monkeypatch.setattr(QualityEngine, "iter_scores", broken)
    with pytest.raises(RuntimeError, match="fell out"):
        compute_quality(dataset, checkpoint=str(tiny_checkpoints["nr"]), num_workers=0)
    record = get_quality_run(dataset, "bpclip_score")
    assert record["status"] == "failed" and "fell out" in record["parameters"]["failure"]


def test_the_form_refuses_what_would_fail_and_names_the_reason(dataset, tiny_checkpoints, tmp_path):
    install_plugin()
    dataset.set_values("reference", dataset.values("filepath"))
    dataset.set_values("weight", [1.0] * len(dataset))

    def refusal(params) -> str:
        with pytest.raises(ExecutionError, match="Validation error") as refused:
            foo.execute_operator(URI, ctx={"dataset": dataset, "params": params})
        return str(refused.value)

    assert "Path: checkpoint" in (reason := refusal({"checkpoint": str(tmp_path / "nowhere.safetensors")}))
    assert "nowhere.safetensors" in reason and "does not exist" in reason
    assert "is a FR checkpoint; the form asks for NR" in refusal({"checkpoint": str(tiny_checkpoints["fr"])})
    # a float field is no reference path: not even offered
    fr_form = {"mode": "fr", "checkpoint": str(tiny_checkpoints["fr"]), "reference_field": "weight"}
    assert "reference_field" in refusal(fr_form)
    dataset.set_values("bpclip_score", [0.5] * len(dataset))
    assert "already exists" in refusal({"checkpoint": str(tiny_checkpoints["nr"])})
    assert "bpclip_score_error" not in dataset.get_field_schema()  # nothing ran


def test_the_reference_dropdown_lists_only_path_fields(dataset):
    from bpclip_plugins.fiftyone.plugin import _path_fields

    dataset.set_values("reference", dataset.values("filepath"))
    dataset.set_values("weight", [1.0] * len(dataset))

    class Context:
        pass

    ctx = Context()
    ctx.dataset = dataset
    assert _path_fields(ctx) == ["reference"]


def test_the_progress_bar_draws_each_state_once(monkeypatch, capsys):
    import bpclip_plugins.fiftyone as plugin

    def steps(samples, **options):
        for i in range(1, 4):
            yield {"progress": i / 3, "label": f"BPCLIP: scored {i}/3"}
        return "summary"

    monkeypatch.setattr(plugin, "iter_compute_quality", steps)
    assert plugin.compute_quality(None, progress=True) == "summary"
    drawn = capsys.readouterr().err
    for i in (1, 2):  # the last state is drawn again when the bar closes, as tqdm does
        assert drawn.count(f"BPCLIP: scored {i}/3") == 1, drawn
