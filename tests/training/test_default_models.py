"""The toolkit behind the bundled models: content, calibrated labels, explanation targets,
NR training on an FR dataset, held-out figures and the whole rebuild pipeline (smoke scale)."""

import csv
import itertools
import json

import numpy as np
import pytest
import torch

from bpclip_core.data import read_csv_dataset
from bpclip_core.data.content import (
    ENLIGHTENMENT_PHOTOS,
    MIN_LUMA_STD,
    build_content,
    crops,
    dead_leaves,
    edj_photograph,
    fractal_noise,
    write_skimage_squares,
)
from bpclip_core.data.pseudo_mos import PRISTINE_MOS, PseudoMOSTable, calibrate, distortion_measure, gmsd
from bpclip_core.data.synthetic import HARMS, PRISTINE, REALISTIC, distort, synthesize_dataset
from bpclip_core.model.adjectives import QUALITY_ADJECTIVES
from bpclip_core.running.explain import dimension_goodness
from bpclip_core.training import TrainConfig, train
from bpclip_core.training.default_models import SCALES, is_validation_picture, rebuild_command
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


def test_edj_photographs_are_the_largest_jpeg_stream_of_the_file(tmp_path):
    import io

    from PIL import Image

    def jpeg(size, colour):
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, "JPEG")
        return buffer.getvalue()

    # an Eet-like archive: a header, a thumbnail, a large picture, a cut-off stream and a stray marker
    data = b"EET\x00" + jpeg((40, 30), "red") + b"\x00" * 7 + jpeg((120, 80), "blue") + jpeg((500, 500), "red")[:200]
    path = tmp_path / "theme.edj"
    path.write_bytes(data + b"\xff\xd8\xff\x00junk")
    picture = edj_photograph(path)
    assert picture.shape == (80, 120, 3) and picture[..., 2].mean() > 0.9 > 0.1 > picture[..., 0].mean()
    path.write_bytes(b"no pictures here")
    with pytest.raises(ValueError, match="no JPEG stream"):
        edj_photograph(path)
    assert len(ENLIGHTENMENT_PHOTOS) == 15


def test_validation_pictures_are_a_stable_tenth_of_the_training_pictures():
    names = [f"picture-{i}" for i in range(2000)]
    chosen = [n for n in names if is_validation_picture(n, seed=0)]
    assert 150 < len(chosen) < 250 and chosen == [n for n in names if is_validation_picture(n, seed=0)]
    assert chosen != [n for n in names if is_validation_picture(n, seed=1)]


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
    from bpclip_core.weights.checkpoint import load_checkpoint

    model = load_checkpoint(result.best_checkpoint, mode="nr")
    with torch.inference_mode():
        score = model(torch.rand(3, 3, 64, 64)).score
    assert ((score >= 0) & (score <= 1)).all()  # bounded by construction


def test_the_card_names_the_command_that_rebuilds_the_model():
    assert rebuild_command("fr", "cpu") == "bash scripts/train_default_models.sh --mode fr --threads 2"
    assert rebuild_command("nr", "big") == "bash scripts/train_default_models.sh --mode nr --threads 2 --scale big"


@pytest.mark.slow
def test_the_rebuild_pipeline_runs_end_to_end_at_smoke_scale(tmp_path):
    from bpclip_core.training.default_models import main
    from bpclip_core.weights.checkpoint import load_checkpoint

    export = tmp_path / "models"
    work = tmp_path / "work"
    args = ["--scale", "smoke", "--work", str(work), "--export-dir", str(export), "--no-debian"]
    assert main([*args, "--mode", "both"]) == 0
    fr = load_checkpoint(export / "bpclip-fr.safetensors", mode="fr")
    model = load_checkpoint(export / "bpclip-nr.safetensors", mode="nr")
    card = model.card.provenance
    assert model.config.backbone == fr.config.backbone == "efficientnet_lite2"
    assert card["bundled"] and card["trained"] and "synthetic" in card["statement"].lower()
    assert card["recipe"]["trained"] == "heads on cached backbone levels" and card["recipe"]["epochs"] == 2
    assert len(card["training_log"]) == 2 and "val_srcc" in card["training_log"][-1]
    assert {"skimage", "procedural"} <= set(card["training_data"]["sources"])
    assert set(card["heldout_figures"]) >= {"monotonicity", "auc", "srcc", "adjective_balanced_accuracy"}
    assert card["command"] == rebuild_command("nr", "smoke")
    assert next(iter(model.state_dict().values())).dtype == torch.float32  # fp16 on disk, fp32 when loaded
    # the backbone is the ImageNet one, untouched by training
    from bpclip_core.model.backbone import build_backbone

    imagenet = build_backbone("efficientnet_lite2", pretrained=True).state_dict()
    shipped = model.backbone.state_dict()
    assert all(torch.allclose(shipped[k].float(), v.float(), rtol=1e-3, atol=1e-3) for k, v in imagenet.items())
    # NR and FR share one feature cache; no validation picture is trained on
    assert json.loads((work / "features" / "manifest.json").read_text())["done"] > 0
    figures = json.loads((work / "run-nr" / "heldout.json").read_text())
    assert set(figures["per_type"]) == set(REALISTIC)
    # resumable and cached: a second run retrains nothing and gives the same figures
    state = (work / "run-nr" / "state.pt").stat().st_mtime_ns
    assert main([*args, "--mode", "nr"]) == 0
    assert (work / "run-nr" / "state.pt").stat().st_mtime_ns == state
    assert json.loads((work / "run-nr" / "heldout.json").read_text()) == figures
    assert SCALES["smoke"].heads["nr"].epochs == 2
