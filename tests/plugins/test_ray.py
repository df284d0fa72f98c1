"""The Ray Data adapter: the UDF class on plain batches (fast), then through ray.data on a
local Ray cluster started once for this module (Parquet round trip, the example script)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from PIL import Image

from bpclip_core.running.engine import QualityEngine
from bpclip_plugins.ray import BPCLIPScorer, actor_device, goodness_column, score_dataset

# Ray Data's context warns about its own deprecated settings when it is shipped to the workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

ENGINE = {"device": "cpu", "num_workers": 0}  # one process per actor: the test machine has 2 cores
EXAMPLE = Path(__file__).parents[2] / "examples" / "ray_score.py"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[str]]:
    """A folder of 4 images of different sizes and a corrupt file; paths also name a missing file."""
    folder = tmp_path_factory.mktemp("ray-images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 72), (80, 64), (96, 96), (64, 64)]):
        path = folder / f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder, [*paths, str(folder / "corrupt.jpg"), str(folder / "missing.png")]


@pytest.fixture(scope="module")
def nr_scorer(tiny_checkpoints) -> BPCLIPScorer:
    return BPCLIPScorer(tiny_checkpoints["nr"], **ENGINE)


@pytest.fixture(scope="module")
def expected(tiny_checkpoints, images) -> dict[str, object]:
    """What the engine itself gives for each path."""
    engine = QualityEngine.from_checkpoint(tiny_checkpoints["nr"], **ENGINE)
    return {r.path: r for r in engine.score(images[1])}


def assert_rows_match(rows: list[dict], expected: dict, scorer: BPCLIPScorer) -> None:
    """Each row's results are the engine's: scores within 1e-5, the same errors."""
    assert sorted(row["path"] for row in rows) == sorted(expected)
    for row in rows:
        want = expected[row["path"]]
        assert row["error"] == want.error, row["path"]
        if want.error is not None:
            assert _missing(row["score"]) and _missing(row["mos"]) and len(row["top_adjectives"]) == 0
            continue
        assert row["score"] == pytest.approx(want.score, abs=1e-5)
        assert row["mos"] == pytest.approx(want.mos, abs=1e-5)
        assert list(row["top_adjectives"]) == [w for w, _ in want.top_adjectives]
        assert list(row["top_adjective_probabilities"]) == pytest.approx([p for _, p in want.top_adjectives], abs=1e-5)
        for dimension in scorer.dimensions:
            assert row[goodness_column(dimension)] == pytest.approx(want.dimensions[dimension], abs=1e-5)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# ---- the class on plain batches -------------------------------------------------------------


def test_numpy_batch_matches_the_engine(nr_scorer, images, expected):
    paths = images[1]
    out = nr_scorer({"path": np.array(paths, dtype=object), "id": np.arange(len(paths))})
    assert list(out["id"]) == list(range(len(paths)))  # the input columns pass through, in order
    assert out["score"].dtype == np.float64
    assert isinstance(out["top_adjectives"][0], list)  # Python lists: Ray makes them Arrow lists
    assert {goodness_column(d) for d in nr_scorer.dimensions} <= set(out)
    rows = [{name: out[name][i] for name in out} for i in range(len(paths))]
    assert_rows_match(rows, expected, nr_scorer)


def test_pandas_batch_keeps_its_index_and_reports_bad_cells(tiny_checkpoints, images, expected):
    folder, paths = images
    scorer = BPCLIPScorer(tiny_checkpoints["nr"], path_column="file", **ENGINE)
    cells = [paths[0], None, float("nan"), "", str(folder)]
    frame = pd.DataFrame({"file": cells}, index=[10, 11, 12, 13, 14])
    out = scorer(frame)
    assert list(out.index) == [10, 11, 12, 13, 14]
    assert out.loc[10, "score"] == pytest.approx(expected[paths[0]].score, abs=1e-5)
    assert pd.isna(out.loc[10, "error"])
    assert list(out["error"][1:]) == [
        "no path in column 'file' (the value is None)",
        "no path in column 'file' (the value is None)",
        "no path in column 'file' (the value is '')",
        f"file {str(folder)!r} is a folder, not an image file",
    ]
    assert out["score"][1:].isna().all()


def test_arrow_batch_has_fixed_types_even_when_every_row_failed(nr_scorer, images):
    batch = pa.table({"path": images[1][-2:], "other": [1, 2]})  # the corrupt and the missing file
    out = nr_scorer(batch)
    assert out.schema.field("score").type == pa.float64()
    assert out.schema.field("top_adjectives").type == pa.list_(pa.string())
    assert out.schema.field("error").type == pa.string()
    assert out.column("other").to_pylist() == [1, 2]
    assert out.column("score").null_count == 2


def test_rescoring_replaces_result_columns(nr_scorer, images):
    once = nr_scorer(pa.table({"path": images[1][:2]}))
    twice = nr_scorer(once)
    assert twice.column_names == once.column_names
    assert twice.column("score").to_pylist() == pytest.approx(once.column("score").to_pylist(), abs=1e-6)


def test_empty_batch(nr_scorer):
    out = nr_scorer({"path": np.array([], dtype=object)})
    assert len(out["score"]) == 0 and "error" in out


def test_full_reference_rows(tiny_checkpoints, images):
    folder, paths = images
    scorer = BPCLIPScorer(tiny_checkpoints["fr"], reference_column="ref", **ENGINE)
    engine = scorer.engine  # the actor's own engine, called directly
    refs = [paths[0], paths[1], str(folder / "missing.png"), None]  # FR pairs have one size: each its own
    out = scorer({"path": np.array(paths[:4], dtype=object), "ref": np.array(refs, dtype=object)})
    want = engine.score(paths[:3], refs[:3])
    assert all(r.score is not None for r in want[:2])
    assert out["score"][:2] == pytest.approx([r.score for r in want[:2]], abs=1e-5)
    assert list(out["error"][:3]) == [r.error for r in want]
    assert "missing.png" in out["error"][2]
    assert out["error"][3] == "no path in column 'ref' (the value is None)"


def test_configuration_errors_fail_at_construction(tiny_checkpoints, nr_scorer):
    with pytest.raises(ValueError, match="reference_column"):
        BPCLIPScorer(tiny_checkpoints["fr"], **ENGINE)
    with pytest.raises(ValueError, match="no-reference"):
        BPCLIPScorer(tiny_checkpoints["nr"], reference_column="ref", **ENGINE)
    with pytest.raises(ValueError, match="no column 'path'.*image"):
        nr_scorer({"image": np.array(["a.png"])})


# ---- through ray.data on a local cluster ------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A 2-CPU local Ray cluster for this module, its session files under the test's tmp dir;
    every process it started is gone afterwards."""
    temp_dir = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # no token auth (it would write ~/.ray/auth_token): the cluster listens on 127.0.0.1 only
        env.setenv("RAY_AUTH_MODE", "disabled")
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            object_store_memory=100 * 1024**2,
            _temp_dir=str(temp_dir),
            log_to_driver=False,
        )
        context = ray.data.DataContext.get_current()
        progress, context.enable_progress_bars = context.enable_progress_bars, False
        try:
            yield temp_dir
        finally:
            context.enable_progress_bars = progress
            ray.shutdown()
            _wait_for_exit(before)


def _wait_for_exit(before: set[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()]
        left = [p for p in left if p.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"Ray left processes behind: {[p.pid for p in left]}"


def test_ray_dataset_to_parquet_matches_the_engine(ray_cluster, tiny_checkpoints, images, expected, nr_scorer):
    paths = images[1]
    # the two failing files last, in a batch of two: a block in which every row failed
    dataset = ray.data.from_items([{"path": p, "n": i} for i, p in enumerate(paths)], override_num_blocks=3)
    scored = score_dataset(dataset, tiny_checkpoints["nr"], actors=1, ray_batch_size=2, **ENGINE)
    out = ray_cluster / "scores.parquet"
    scored.write_parquet(str(out))
    table = pq.read_table(out)  # every file of the folder read with one schema
    assert table.num_rows == len(paths)
    assert table.schema.field("top_adjectives").type == pa.list_(pa.string())
    assert table.schema.field("error").type == pa.string()
    assert_rows_match(table.to_pylist(), expected, nr_scorer)
    # the Parquet round trip: scored again from the written file, the same results
    again = score_dataset(ray.data.read_parquet(str(out)), tiny_checkpoints["nr"], actors=1, **ENGINE)
    assert_rows_match(again.take_all(), expected, nr_scorer)


def test_an_actor_without_gpus_scores_on_the_cpu(ray_cluster, tiny_checkpoints):
    assert actor_device() == "auto"  # the driver is no actor
    actor = ray.remote(BPCLIPScorer).remote(tiny_checkpoints["nr"], num_workers=0)
    try:
        picked = ray.get(actor.__ray_call__.remote(lambda scorer: (actor_device(), scorer.engine.device.type)))
    finally:
        ray.kill(actor)
    assert picked == ("cpu", "cpu")


def test_example_script_scores_a_folder(ray_cluster, tiny_checkpoints, images, expected, nr_scorer):
    spec = importlib.util.spec_from_file_location("ray_score", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = ray_cluster / "folder.parquet"
    args = [str(images[0]), str(out), "--checkpoint", str(tiny_checkpoints["nr"]), "--actors", "1", "--cpu"]
    assert example.main([*args, "--num-workers", "0"]) == 0  # joins the running cluster
    rows = pq.read_table(out).to_pylist()
    found = {k: v for k, v in expected.items() if not k.endswith("missing.png")}  # a folder lists what is there
    assert_rows_match(rows, found, nr_scorer)
