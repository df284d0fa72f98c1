"""The within-picture ranking recipe: grouped batches, shared crops and the ranking loss."""

from __future__ import annotations

import csv

import pytest
import torch

from bpclip_core.data.readers import read_csv_dataset
from bpclip_core.data.transforms import QualityImages, reference_groups
from bpclip_core.training import TrainConfig, train
from bpclip_core.training.distributed import DistributedContext, grouped_epoch_order
from bpclip_core.training.losses import ranking_loss

SINGLE = DistributedContext()


def test_grouped_order_holds_every_item_in_runs_of_one_picture(small_synthetic_csv):
    dataset = read_csv_dataset(small_synthetic_csv)
    groups = reference_groups(dataset)
    assert len(set(groups)) == 8  # 8 references, each with its 10 distorted versions
    order = grouped_epoch_order(groups, 4, seed=0, epoch=0, context=SINGLE)
    assert len(order) % 4 == 0 and set(order) == set(range(len(dataset)))
    runs = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(len({groups[i] for i in run}) == 1 for run in runs)
    assert len({groups[run[0]] for run in runs[:8]}) > 1  # runs are shuffled across pictures
    assert order == grouped_epoch_order(groups, 4, 0, 0, SINGLE) != grouped_epoch_order(groups, 4, 0, 1, SINGLE)


def test_grouped_order_gives_ranks_disjoint_whole_runs(small_synthetic_csv):
    groups = reference_groups(read_csv_dataset(small_synthetic_csv))
    shares = [grouped_epoch_order(groups, 4, 0, 0, DistributedContext(rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1])
    for share in shares:
        assert all(len({groups[i] for i in share[s : s + 4]}) == 1 for s in range(0, len(share), 4))


def test_shared_crops_give_all_versions_of_a_picture_the_same_window(small_synthetic_csv):
    dataset = read_csv_dataset(small_synthetic_csv)
    groups = reference_groups(dataset)
    same_picture = [i for i, g in enumerate(groups) if g == groups[0]][:2]
    shared = QualityImages(dataset, 32, True, seed=3, shared_crops=True, with_reference=True)
    own = QualityImages(dataset, 32, True, seed=3, with_reference=True)
    # the references of two versions of one picture are the same file: equal crops mean equal windows
    a, b = (shared[i]["reference"] for i in same_picture)
    assert torch.equal(a, b)
    assert shared[same_picture[0]]["group"] == shared[same_picture[1]]["group"]
    draws = [own[i]["reference"] for i in same_picture]
    assert not torch.equal(*draws)  # without sharing, each item draws its own crop


def test_ranking_loss_penalises_inverted_pairs_of_one_picture_only():
    target = torch.tensor([0.9, 0.5, 0.9, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    right = torch.tensor([0.95, 0.4, 0.9, 0.5])
    assert float(ranking_loss(right, target, groups)) == pytest.approx(0.0)
    inverted = torch.tensor([0.4, 0.95, 0.9, 0.5])
    assert float(ranking_loss(inverted, target, groups)) == pytest.approx(((0.9 - 0.5) - (0.4 - 0.95)) / 2)
    # pairs across pictures never count, whatever their order
    across = torch.tensor([0.9, 0.5, 0.1, -0.3])  # picture 1 scores below picture 0: no matter
    assert float(ranking_loss(across, target, groups)) == pytest.approx(0.0)
    no_pairs = ranking_loss(right, target, torch.arange(4))
    assert float(no_pairs) == 0.0 and no_pairs.requires_grad is False


def test_ranking_needs_groups_that_divide_the_batch():
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig(batch_size=8, group_size=3)
    with pytest.raises(ValueError, match="ranking_loss_weight needs group_size"):
        TrainConfig(ranking_loss_weight=1.0)


def test_a_run_with_the_ranking_loss_trains(small_synthetic_csv, tmp_path):
    from .test_trainer import tiny_config

    config = tiny_config(small_synthetic_csv, tmp_path / "rank", mode="nr", group_size=4, ranking_loss_weight=1.0)
    result = train(config)
    assert all(row["train_loss"] > 0 for row in result.history)
    assert result.best_checkpoint.is_file()


def test_the_log_holds_each_loss_term_and_they_add_up_to_the_training_loss(small_synthetic_csv, tmp_path):
    from .test_trainer import tiny_config

    out = tmp_path / "terms"
    weights = {"adjective_loss_weight": 0.3, "ranking_loss_weight": 2.0}
    train(tiny_config(small_synthetic_csv, out, mode="nr", group_size=4, **weights))
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        quality, adjective, ranking = (float(row[k]) for k in ("quality_loss", "adjective_loss", "ranking_loss"))
        assert quality > 0 and adjective > 0 and ranking >= 0
        weighted = quality + weights["adjective_loss_weight"] * adjective + weights["ranking_loss_weight"] * ranking
        assert float(row["train_loss"]) == pytest.approx(weighted, rel=1e-5)
    plain = tmp_path / "plain"  # terms whose weight is 0 are not computed, so not logged
    train(tiny_config(small_synthetic_csv, plain, mode="nr", epochs=1))
    with (plain / "log.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["adjective_loss"] == row["ranking_loss"] == ""
    assert float(row["quality_loss"]) == pytest.approx(float(row["train_loss"]), rel=1e-6)


def test_a_run_from_before_the_ranking_fields_resumes(small_synthetic_csv, tmp_path):
    import json

    from bpclip_core.training.trainer import RESUME_NAME

    from .test_trainer import tiny_config

    out = tmp_path / "old"
    train(tiny_config(small_synthetic_csv, out, epochs=1))
    state = torch.load(out / RESUME_NAME, weights_only=True)
    stored = json.loads(state["config"])
    del stored["group_size"], stored["ranking_loss_weight"]  # as written before these fields existed
    state["config"] = json.dumps(stored)
    torch.save(state, out / RESUME_NAME)
    resumed = train(tiny_config(small_synthetic_csv, out, epochs=2), resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    with pytest.raises(Exception, match="group_size"):  # a real change is still refused
        train(tiny_config(small_synthetic_csv, out, epochs=3, group_size=2), resume=True)
