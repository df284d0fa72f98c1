import json

import pytest

from bpclip_core.data import DatasetError, content_split, load_splits, make_splits, read_csv_dataset, save_splits
from bpclip_core.data.splits import official_split


@pytest.fixture(scope="module")
def dataset(small_synthetic_csv):
    return read_csv_dataset(small_synthetic_csv)


def _contents(dataset, indices):
    return {dataset.items[i].content for i in indices}


def test_fr_split_is_6_2_2_by_reference_with_no_shared_content(dataset):
    split = content_split(dataset, seed=0)
    train, val, test = (_contents(dataset, part) for part in (split.train, split.val, split.test))
    assert not (train & val or train & test or val & test)
    assert (len(train), len(val), len(test)) == (5, 2, 1) or (len(train), len(val), len(test)) == (5, 1, 2)
    assert sorted(split.train + split.val + split.test) == list(range(len(dataset)))


def test_nr_default_is_8_2_without_validation(tmp_path):
    from PIL import Image

    lines = ["image,mos"]
    for i in range(20):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{i}")
    (tmp_path / "nr.csv").write_text("\n".join(lines))
    nr = read_csv_dataset(tmp_path / "nr.csv")
    split = content_split(nr, seed=4)
    assert (len(split.train), len(split.val), len(split.test)) == (16, 0, 4)


def test_ten_seeded_splits_differ_and_are_reproducible(dataset):
    first, again = make_splits(dataset, 10), make_splits(dataset, 10)
    assert [s.test for s in first.splits] == [s.test for s in again.splits]
    assert len({tuple(s.train) for s in first.splits}) > 1
    assert [s.seed for s in first.splits] == list(range(10))


def test_split_file_round_trip_and_records_the_dataset(dataset, tmp_path):
    path = save_splits(make_splits(dataset, 3), tmp_path / "splits.json")
    data = json.loads(path.read_text())
    assert data["dataset"] == dataset.name and data["num_items"] == len(dataset)
    loaded = load_splits(path, dataset)
    assert loaded.splits[2].train == make_splits(dataset, 3).splits[2].train


def test_split_file_from_another_dataset_is_a_clear_error(dataset, tmp_path):
    path = save_splits(make_splits(dataset, 1), tmp_path / "splits.json")
    other = dataset.subset(list(range(40)), name="other")
    with pytest.raises(DatasetError, match="made for dataset"):
        load_splits(path, other)
    data = json.loads(path.read_text())
    data["fingerprint"] = "0" * 16
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="different version"):
        load_splits(path, dataset)


def test_malformed_split_files_are_clear_errors(dataset, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not a valid"):
        load_splits(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DatasetError, match="not a bpclip split file"):
        load_splits(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits(tmp_path / "missing.json")


def test_official_split_by_names(dataset):
    names = [item.image.name for item in dataset.items]
    split_set = official_split(dataset, {"train": names[:60], "val": names[60:70], "test": names[70:]})
    assert split_set.splits[0].test == list(range(70, 80))
    with pytest.raises(DatasetError, match="unknown images"):
        official_split(dataset, {"train": ["nope.png"]})
