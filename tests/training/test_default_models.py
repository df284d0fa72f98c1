"""The toolkit behind the bundled models: content, calibrated labels, explanation targets,
NR training on an FR dataset, held-out figures and the whole rebuild pipeline (smoke scale)."""

import collections
import csv
import itertools
import json

import numpy as np
import pytest
import torch

from bpclip_core.adjectives import QUALITY_ADJECTIVES
from bpclip_core.data import read_csv_dataset
from bpclip_core.data.content import (
    MIN_LUMA_STD,
    augmented_crops,
    build_content,
    crops,
    dead_leaves,
    fractal_noise,
    photo_scene,
    write_skimage_squares,
)
from bpclip_core.data.pseudo_mos import PRISTINE_MOS, PseudoMOSTable, calibrate, distortion_measure, gmsd
from bpclip_core.data.synthetic import HARMS, PRISTINE, REALISTIC, distort, synthesize_dataset
from bpclip_core.explain import dimension_goodness
from bpclip_core.training import TrainConfig, train
from bpclip_core.training.default_models import PEAK_LR, RANKING_LR, SCALES, rebuild_command
from bpclip_core.training.losses import adjective_loss, adjective_targets


@pytest.fixture(scope="module")
def astronaut(pristine_dir):
    from PIL import Image

    return np.asarray(Image.open(pristine_dir / "astronaut.png").convert("RGB"), dtype=np.float32) / 255


def test_procedural_pictures_are_textured_and_deterministic():
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    leaves, noise = dead_leaves(64, rng()), fractal_noise(64, rng())
    assert np.array_equal(leaves, dead_leaves(64, rng())) and np.array_equal(noise, fractal_noise(64, rng()))
    for picture in (leaves, noise):
        assert picture.shape == (64, 64, 3) and picture.min() >= 0 and picture.max() <= 1
        assert picture.std() > MIN_LUMA_STD


def test_flat_crops_are_skipped():
    flat = np.full((200, 200, 3), 0.4, np.float32)
    assert list(crops(flat, 64, 4, np.random.default_rng(0))) == []
    textured = np.random.default_rng(1).random((200, 200, 3)).astype(np.float32)
    assert len(list(crops(textured, 64, 4, np.random.default_rng(0)))) == 4


def test_skimage_squares_are_rgb_squares_of_the_asked_size(tmp_path):
    from PIL import Image

    folder = write_skimage_squares(tmp_path / "squares", 40, ("camera", "stereo_motorcycle"))
    for name in ("camera", "stereo_motorcycle"):  # a grey picture and a stereo pair
        with Image.open(folder / f"{name}.png") as picture:
            assert (picture.mode, picture.size) == ("RGB", (40, 40))


def test_content_is_split_by_picture_with_sources_and_licences(tmp_path):
    manifest = build_content(tmp_path, size=48, num_procedural=6, max_crops=2, debian=False)
    train_pictures = {p.name.split("__")[0] for p in (tmp_path / "train").glob("*.png")}
    heldout_pictures = {p.name.split("__")[0] for p in (tmp_path / "heldout").glob("*.png")}
    assert train_pictures and heldout_pictures and not train_pictures & heldout_pictures
    assert {"skimage-astronaut", "skimage-coffee"} <= heldout_pictures  # the README's examples are unseen
    assert {"skimage", "procedural"} <= set(manifest["sources"])
    assert all(source["licence"] for source in manifest["sources"].values())
    assert json.loads((tmp_path / "content.json").read_text()) == manifest


def test_photo_scenes_are_deterministic_textured_pictures():
    scene = photo_scene(96, np.random.default_rng(4))
    assert np.array_equal(scene, photo_scene(96, np.random.default_rng(4)))
    assert scene.shape == (96, 96, 3) and scene.dtype == np.float32 and scene.min() >= 0 and scene.max() <= 1
    assert scene.std() > MIN_LUMA_STD
    assert not np.array_equal(scene, photo_scene(96, np.random.default_rng(5)))


def test_wider_content_adds_augmented_crops_to_small_training_pictures_only(tmp_path):
    plain = build_content(tmp_path / "plain", size=48, num_procedural=3, max_crops=2, debian=False)
    wide = build_content(
        tmp_path / "wide", size=48, num_procedural=3, max_crops=2, debian=False, min_crops=5, num_scenes=2
    )
    assert (plain["min_crops"], wide["min_crops"], plain["scenes"], wide["scenes"]) == (0, 5, 0, 2)

    def files(folder):
        return {p.name: p.read_bytes() for p in folder.glob("*.png")}

    # the held-out references (and so every held-out figure) are the same as without augmentation
    assert files(tmp_path / "wide" / "heldout") == files(tmp_path / "plain" / "heldout")
    plain_train, wide_train = files(tmp_path / "plain" / "train"), files(tmp_path / "wide" / "train")
    assert plain_train.items() <= wide_train.items()  # the plain crops come first, unchanged
    per_picture = collections.Counter(name.split("__")[0] for name in wide_train)
    plain_per_picture = collections.Counter(name.split("__")[0] for name in plain_train)
    assert {"procedural-scene-000", "procedural-scene-001"} <= set(per_picture)  # scenes train, never held out
    procedural = {name for name in per_picture if name.startswith("procedural") and name in plain_per_picture}
    assert procedural and all(per_picture[name] == plain_per_picture[name] for name in procedural)
    registry = [count for name, count in per_picture.items() if not name.startswith("procedural")]
    assert max(registry) == 5 and sum(count == 5 for count in registry) > len(registry) / 2
    assert wide["train_references"] > plain["train_references"] + len(per_picture)
    # a cached folder of another recipe is rebuilt, not reused
    again = build_content(tmp_path / "wide", size=48, num_procedural=3, max_crops=2, debian=False, min_crops=0)
    assert again["train_references"] == plain["train_references"]


def test_augmented_crops_are_turned_or_mirrored_windows_never_the_centre_square():
    image = np.random.default_rng(3).random((120, 90, 3)).astype(np.float32)
    centre = next(crops(image, 40, 1, np.random.default_rng(0)))
    extra = list(augmented_crops(image, 40, 6, np.random.default_rng(0)))
    assert len(extra) == 6 and all(c.shape == (40, 40, 3) and c.flags.c_contiguous for c in extra)
    assert not any(np.array_equal(c, centre) for c in extra)
    assert len({c.tobytes() for c in extra}) == 6


def test_calibrated_labels_are_monotone_pristine_best_and_comparable(astronaut, tmp_path):
    table = calibrate([astronaut], ["gaussian_blur", "darken", "jpeg"])
    for name, mos in table.mos.items():
        assert all(a >= b for a, b in itertools.pairwise(mos)), (name, mos)
        assert all(1 <= m < PRISTINE_MOS for m in mos)
    assert table("jpeg", 0) == PRISTINE_MOS
    assert table("gaussian_blur", 5) < table("gaussian_blur", 1)
    assert PseudoMOSTable.load(table.save(tmp_path / "t.json")).mos == table.mos
    assert distortion_measure(astronaut, astronaut) == pytest.approx(0, abs=1e-6)
    blurred = distort(astronaut, "gaussian_blur", 4)
    mild = distort(astronaut, "gaussian_blur", 1)
    assert distortion_measure(astronaut, blurred) > distortion_measure(astronaut, mild)
    assert gmsd(astronaut, blurred) > gmsd(astronaut, astronaut)


def test_synthesize_with_labels_subsets_and_pristine_items(pristine_dir, tmp_path):
    csv_path = synthesize_dataset(
        pristine_dir, tmp_path, REALISTIC, levels=(1, 2), size=40, labels=lambda d, lv: 4.5 - lv,
        types_per_reference=3, include_pristine=True,
    )  # fmt: skip
    rows = list(csv.DictReader(csv_path.open()))
    pristine = [r for r in rows if r["distortion"] == PRISTINE]
    assert len(pristine) == len(list(pristine_dir.glob("*.png"))) and all(r["image"] == r["ref"] for r in pristine)
    per_reference = {}
    for row in rows:
        if row["distortion"] != PRISTINE:
            per_reference.setdefault(row["ref"], set()).add(row["distortion"])
            assert float(row["mos"]) == 4.5 - int(row["level"])
    assert all(len(types) == 3 for types in per_reference.values())
    assert len({frozenset(t) for t in per_reference.values()}) > 1  # seeded, not the same subset everywhere
    dataset = read_csv_dataset(csv_path)
    assert {item.distortion for item in dataset.items} >= {PRISTINE}


def test_every_realistic_type_names_its_harm():
    dimensions = {a.dimension for a in QUALITY_ADJECTIVES}
    words = {a.word for a in QUALITY_ADJECTIVES if a.polarity < 0}
    for name in REALISTIC:
        dimension, adjectives = HARMS[name]
        assert dimension in dimensions and set(adjectives) <= words


def test_adjective_targets_make_the_harmed_dimension_the_lowest():
    names = ["gaussian_blur", "gaussian_noise", "darken", "desaturate", "haze", PRISTINE, ""]
    quality = torch.tensor([0.3, 0.3, 0.3, 0.3, 0.3, 1.0, 0.5])
    targets, mask = adjective_targets(names, quality, QUALITY_ADJECTIVES)
    assert mask.tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert torch.allclose(targets[:6].sum(-1), torch.ones(6))
    goodness = dimension_goodness(targets, QUALITY_ADJECTIVES)
    named = [d for d in goodness if d != "overall quality"]
    for row, expected in enumerate(["sharpness", "noisiness", "brightness", "colorfulness", "contrast"]):
        assert min(named, key=lambda d: goodness[d][row]) == expected
    assert all(goodness[d][5] == pytest.approx(1.0) for d in goodness)  # pristine: every dimension good
    probabilities = torch.softmax(torch.randn(7, 4, 40, requires_grad=True), -1)
    loss = adjective_loss(probabilities, targets, mask)
    assert loss > 0 and adjective_loss(targets[:, None].expand(7, 4, 40), targets, mask) == pytest.approx(0, abs=1e-5)


def test_nr_model_trains_on_an_fr_dataset_with_the_explanation_loss(small_synthetic_csv, tmp_path):
    config = TrainConfig(
        dataset="csv", dataset_root=str(small_synthetic_csv), model="tiny", mode="nr", pretrained=False,
        epochs=1, batch_size=8, patch_size=48, t_max=0, adjective_loss_weight=0.1, progress=False,
        out_dir=str(tmp_path / "run"), max_steps_per_epoch=2,
    )  # fmt: skip
    result = train(config)
    assert np.isfinite(result.history[-1]["train_loss"])
    from bpclip_core.checkpoint import load_checkpoint

    model = load_checkpoint(result.best_checkpoint, mode="nr")
    with torch.inference_mode():
        score = model(torch.rand(3, 3, 64, 64)).score
    assert ((score >= 0) & (score <= 1)).all()  # bounded by construction


def test_the_card_names_the_command_that_rebuilds_the_model_overrides_included():
    assert rebuild_command("fr", "cpu") == "bash scripts/train_default_models.sh --mode fr"
    assert rebuild_command("nr", "big", ranking_epochs=0, restart_epochs=3) == (
        "bash scripts/train_default_models.sh --mode nr --scale big --restart-epochs 3 --ranking-epochs 0"
    )


@pytest.mark.slow
def test_the_rebuild_pipeline_runs_end_to_end_at_smoke_scale(tmp_path):
    from bpclip_core.checkpoint import load_checkpoint
    from bpclip_core.training.default_models import main

    export = tmp_path / "models"
    args = ["--scale", "smoke", "--work", str(tmp_path / "work"), "--export-dir", str(export), "--no-debian"]
    assert main([*args, "--mode", "both"]) == 0
    assert load_checkpoint(export / "bpclip-fr.safetensors", mode="fr").card.provenance["bundled"]
    model = load_checkpoint(export / "bpclip-nr.safetensors", mode="nr")
    card = model.card.provenance
    assert "backbone_initialised_from" not in card  # NR learns from random initialisation, as FR does
    assert card["recipe"]["lr"] == RANKING_LR and card["recipe"]["init_checkpoint"].endswith("best.safetensors")
    # every cycle is on the card: random initialisation at NR's peak lr, the warm restart, the ranking cycle
    assert [c["out_dir"] for c in card["cycles"]] == ["run-nr", "run-nr-cycle2", "run-nr-rank"]
    assert card["cycles"][0]["init_checkpoint"] is None and card["cycles"][0]["lr"] == PEAK_LR["nr"]
    assert card["cycles"][1]["lr"] == PEAK_LR["nr"] / 2 and card["cycles"][2]["ranking_loss_weight"] == 1.0
    assert card["bundled"] and card["trained"] and "synthetic" in card["statement"].lower()
    assert {"skimage", "procedural"} <= set(card["training_data"]["sources"])
    # NR learns from the wider content (its own folders), FR from the plain one
    assert card["training_data"]["augmented_crops_up_to"] == SCALES["smoke"].min_crops["nr"] > 0
    assert (tmp_path / "work" / "content-min3-scenes2" / "content.json").is_file()
    fr_card = load_checkpoint(export / "bpclip-fr.safetensors", mode="fr").card.provenance
    assert fr_card["training_data"]["augmented_crops_up_to"] == 0
    assert card["training_data"]["photo_like_scenes"] == 2 and fr_card["training_data"]["photo_like_scenes"] == 0
    assert fr_card["training_data"]["train_references"] < card["training_data"]["train_references"]
    assert set(card["heldout_figures"]) >= {"monotonicity", "auc", "srcc", "adjective_balanced_accuracy"}
    assert (card["recipe"]["group_size"], card["recipe"]["ranking_loss_weight"]) == (4, 1.0)  # the ranking cycle
    assert next(iter(model.state_dict().values())).dtype == torch.float32  # fp16 on disk, fp32 when loaded
    figures = json.loads((tmp_path / "work" / "run-nr-rank" / "heldout.json").read_text())
    assert set(figures["per_type"]) == set(REALISTIC)
    # resumable and cached: a second run retrains nothing and gives the same figures
    assert main([*args, "--mode", "nr"]) == 0
    assert json.loads((tmp_path / "work" / "run-nr-rank" / "heldout.json").read_text()) == figures
    # a run written before later fields existed, or scored by another test-time protocol, is the same recipe
    saved = tmp_path / "work" / "run-fr" / "train_config.json"
    older = {k: v for k, v in json.loads(saved.read_text()).items() if k not in ("precision", "group_size")}
    saved.write_text(json.dumps({**older, "eval_protocol": "crops", "num_workers": 0}))
    assert main([*args, "--mode", "fr"]) == 0
    # a cached run of another recipe is refused, never silently reused
    saved = tmp_path / "work" / "run-nr" / "train_config.json"
    original = saved.read_text()
    saved.write_text(json.dumps({**json.loads(original), "lr": 0.123}))
    with pytest.raises(SystemExit, match=r"another recipe \(lr differ"):
        main([*args, "--mode", "nr"])
    saved.write_text(original)
    # so is a finished cycle of another length (the epochs shape its cosine): a 2-epoch restart is asked,
    # the cached restart ran 1
    with pytest.raises(SystemExit, match=r"run-nr-cycle2 holds a run of another recipe \(epochs differ"):
        main([*args, "--mode", "nr", "--restart-epochs", "2"])
