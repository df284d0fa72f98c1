import json
import os

import pytest
import torch
from safetensors.torch import save_file

import bpclip_core.weights.checkpoint as checkpoint_module
from bpclip_core import CheckpointError, CheckpointNotFoundError, ModeMismatchError
from bpclip_core.errors import WeightsNotFoundError
from bpclip_core.weights.checkpoint import (
    CHECKPOINT_ENV,
    checkpoint_dir,
    init_checkpoint,
    load_checkpoint,
    read_metadata,
    resolve_checkpoint,
    save_checkpoint,
)


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_save_then_load_gives_bit_identical_outputs(mode, tmp_path, nr_model, fr_model, images):
    model = nr_model if mode == "nr" else fr_model
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    reference = images.flip(-1) if mode == "fr" else None
    with torch.inference_mode():
        a, b = model(images, reference), loaded(images, reference)
    assert torch.equal(a.score, b.score)
    assert torch.equal(a.level_probabilities, b.level_probabilities)
    assert not list(tmp_path.glob("*.partial"))


def test_metadata_records_everything_needed(tmp_path, fr_model):
    path = save_checkpoint(fr_model, tmp_path / "fr.safetensors")
    meta = read_metadata(path)
    assert meta["format"] == "bpclip-checkpoint"
    assert meta["config"]["mode"] == "fr"
    assert meta["config"]["text_model"] == "bpclip-tiny-clip/random"
    assert len(meta["adjectives"]) == 40 and meta["prompt_template"] == "a {} photo."
    assert meta["score_scale"] == {"mos_min": 0.0, "mos_max": 1.0, "higher_is_better": True}
    assert "library_version" in meta and "provenance" in meta


def test_loading_precedence_explicit_then_env_then_cache(tmp_path, monkeypatch, nr_model, fr_model):
    explicit = save_checkpoint(nr_model, tmp_path / "explicit.safetensors")
    from_env = save_checkpoint(nr_model, tmp_path / "env.safetensors")
    cached = save_checkpoint(nr_model, checkpoint_dir() / "bpclip-nr.safetensors")
    named = save_checkpoint(fr_model, checkpoint_dir() / "my-fr.safetensors")
    monkeypatch.setenv(CHECKPOINT_ENV, str(from_env))
    assert resolve_checkpoint(explicit) == explicit
    assert resolve_checkpoint("my-fr") == named
    assert resolve_checkpoint() == from_env
    monkeypatch.delenv(CHECKPOINT_ENV)
    assert resolve_checkpoint(mode="nr") == cached
    assert load_checkpoint("my-fr").mode == "fr"


def test_missing_checkpoint_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "BUNDLED_DIR", tmp_path / "no-bundled-models")
    with pytest.raises(CheckpointNotFoundError, match="No official trained BPCLIP weights exist") as info:
        resolve_checkpoint(mode="fr")
    assert "bpclip-fr.safetensors" in str(info.value) and "BPCLIP_CHECKPOINT" in str(info.value)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "gone.safetensors"))
    with pytest.raises(CheckpointNotFoundError, match="BPCLIP_CHECKPOINT names"):
        load_checkpoint()
    assert isinstance(info.value, FileNotFoundError)


def test_bundled_models_are_the_last_step_of_the_precedence(tmp_path, monkeypatch, nr_model):
    bundled = {mode: checkpoint_module.BUNDLED_DIR / f"bpclip-{mode}.safetensors" for mode in ("nr", "fr")}
    assert resolve_checkpoint() == bundled["nr"] and resolve_checkpoint(mode="fr") == bundled["fr"]
    for mode, path in bundled.items():
        model = load_checkpoint(mode=mode)
        provenance = model.card.provenance
        assert model.mode == mode and provenance["bundled"] and provenance["trained"]
        assert "not human ratings" in provenance["statement"] or "never saw a human" in provenance["statement"]
        assert path.stat().st_size < 30e6
    cached = save_checkpoint(nr_model, checkpoint_dir() / "bpclip-nr.safetensors")
    assert resolve_checkpoint() == cached  # the cache comes before the bundled model


def test_wrong_mode_is_refused(tmp_path, fr_model):
    path = save_checkpoint(fr_model, tmp_path / "fr.safetensors")
    with pytest.raises(ModeMismatchError, match="is a FR checkpoint but NR scoring"):
        load_checkpoint(path, mode="nr")


def test_corrupt_truncated_and_foreign_files(tmp_path, nr_model):
    good = save_checkpoint(nr_model, tmp_path / "good.safetensors")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(1000))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a BPCLIP checkpoint"):
        load_checkpoint(foreign)
    mismatched = tmp_path / "mismatched.safetensors"
    meta = read_metadata(good)
    meta["config"]["token_dim"] = 64
    save_file({"text_embeddings": nr_model.text_embeddings}, str(mismatched), {"bpclip": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match the stored config"):
        load_checkpoint(mismatched)


def test_init_checkpoint_random_needs_no_weights(tmp_path, images):
    path = init_checkpoint("tiny", "fr", tmp_path / "fr.safetensors", random=True, seed=3)
    model = load_checkpoint(path, mode="fr")
    assert model.card.provenance["trained"] is False
    assert model.card.provenance["initialisation"] == "random"
    assert model(images, images).score.shape == (2,)
    again = load_checkpoint(init_checkpoint("tiny", "fr", tmp_path / "again.safetensors", random=True, seed=3))
    assert torch.equal(again(images, images).score, model(images, images).score)


def test_init_checkpoint_from_planted_imagenet_weights(tmp_path, planted_resnet18):
    path = init_checkpoint("tiny", "nr", tmp_path / "nr.safetensors", random=False)
    model = load_checkpoint(path)
    assert torch.equal(model.backbone.stem[0].weight, planted_resnet18["conv1.weight"])
    assert torch.equal(model.backbone.stages[3][1].conv2.weight, planted_resnet18["layer4.1.conv2.weight"])
    assert "pretrained" in model.card.provenance["backbone_weights"]


def test_init_checkpoint_without_weights_names_the_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="resnet50-0676ba61.pth") as info:
        init_checkpoint("paper", "nr", tmp_path / "paper.safetensors", random=False)
    assert os.environ["TORCH_HOME"] in str(info.value)
    assert not (tmp_path / "paper.safetensors").exists()
