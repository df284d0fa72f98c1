"""Heads trained on cached frozen-backbone levels: the cache, the batches, resumption, dead levels."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bpclip_core import BPCLIP, preset
from bpclip_core.training.default_models import dead_levels
from bpclip_core.training.frozen_backbone import (
    FeatureCache,
    HeadRecipe,
    Item,
    epoch_batches,
    kept_epoch,
    train_heads,
    validation_score,
)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache-images")
    rng = np.random.default_rng(0)
    for index in range(12):
        pixels = (rng.random((64, 64, 3)) * 255 * (0.3 + index / 20)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    return folder


def _tiny(mode="nr"):
    torch.manual_seed(0)
    return BPCLIP(preset("tiny", mode), torch.randn(40, 32))


def test_cache_holds_the_backbone_levels_and_resumes_after_a_kill(image_folder, tmp_path):
    from bpclip_core.inputs.decoding import load_image

    model = _tiny()
    names = sorted(p.name for p in image_folder.glob("*.png"))
    cache = FeatureCache.build(model.backbone, image_folder, names, tmp_path / "full", batch_size=5)
    assert len(cache) == 12 and cache.manifest["done"] == 12
    with torch.inference_mode():
        expected = model.backbone.eval()(torch.stack([load_image(image_folder / names[i]) for i in (7, 2)]))
    for got, want in zip(cache.batch([7, 2]), expected):  # any order of rows, float16 on disk
        assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))
    # a build killed after its first batch resumes where it stopped and ends with the same arrays
    partial = tmp_path / "partial"
    FeatureCache.build(model.backbone, image_folder, names[:5], partial, batch_size=5)
    manifest = json.loads((partial / "manifest.json").read_text())
    stopped = FeatureCache.build(model.backbone, image_folder, names[:5], tmp_path / "again", batch_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(stopped.levels, FeatureCache(partial).levels))
    manifest["done"] = 0  # as if killed before the manifest recorded the first batch
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="incomplete"):
        FeatureCache(partial)
    resumed = FeatureCache.build(model.backbone, image_folder, names[:5], partial, batch_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.levels, stopped.levels))
    # another image list (or another backbone) is refused, never reused
    with pytest.raises(SystemExit, match="other images or another backbone"):
        FeatureCache.build(model.backbone, image_folder, names[:4], partial)
    with pytest.raises(SystemExit, match="other images or another backbone"):
        FeatureCache.build(_tiny().backbone.requires_grad_(False).apply(_perturb), image_folder, names[:5], partial)


def _perturb(module):
    if isinstance(module, torch.nn.Conv2d):
        with torch.no_grad():
            module.weight.mul_(1.5)


def test_epoch_batches_keep_runs_of_one_picture_together_and_cover_every_item_once():
    items = [Item(image=i, reference=None, target=0.5, distortion="", group=i // 6) for i in range(36)]
    recipe = HeadRecipe(batch_size=8, group_size=3, seed=1)
    batches = epoch_batches(items, recipe, epoch=0)
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(range(36)) and all(len(b) <= 8 for b in batches)
    runs = [order[i : i + 3] for i in range(0, 36, 3)]
    assert all(len({items[i].group for i in run}) == 1 for run in runs)
    assert epoch_batches(items, recipe, 0) == batches and epoch_batches(items, recipe, 1) != batches


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_heads_learn_and_a_killed_run_resumes_to_the_same_weights(image_folder, tmp_path, mode):
    names = sorted(p.name for p in image_folder.glob("*.png"))
    cache = FeatureCache.build(_tiny(mode).backbone, image_folder, names, tmp_path / "cache")
    # target: brighter pictures (higher index) are better; FR pairs each image with the brightest
    items = [Item(i, 11 if mode == "fr" else None, i / 11, "gaussian_noise", i % 3) for i in range(12)]
    recipe = HeadRecipe(epochs=4, batch_size=4, lr=3e-3, warmup_steps=2, group_size=2)
    validated = _tiny(mode)
    backbone_before = {k: v.clone() for k, v in validated.backbone.state_dict().items()}
    levels = [0 if i % 4 == 0 else i % 4 for i in range(12)]
    history = train_heads(validated, cache, items, tmp_path / "validated", recipe, (items, levels))
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert {"quality", "explanation", "ranking", "val_srcc", "val_monotonicity"} <= set(history[-1])
    assert all(torch.equal(v, validated.backbone.state_dict()[k]) for k, v in backbone_before.items())  # frozen
    # with validation the model keeps its best epoch's weights
    best = max(history, key=validation_score)
    assert kept_epoch(history) == best["epoch"] and all(validation_score(r) <= validation_score(best) for r in history)
    kept = torch.load(tmp_path / "validated" / "best.pt", weights_only=True)
    assert all(torch.equal(v, validated.state_dict()[k]) for k, v in kept.items())
    whole = _tiny(mode)
    train_heads(whole, cache, items, tmp_path / "whole", recipe, None)
    # a kill after epoch 2 of 4: the state of epoch 2 is what a killed run leaves
    interrupted = _tiny(mode)
    run = tmp_path / "interrupted"
    assert len(train_heads(interrupted, cache, items, run, recipe, None, stop_after_epochs=2)) == 2
    resumed = _tiny(mode)
    train_heads(resumed, cache, items, run, recipe, None)
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key
    with pytest.raises(SystemExit, match="another recipe"):
        train_heads(_tiny(mode), cache, items, run, HeadRecipe(**{**recipe.to_dict(), "lr": 0.1}), None)


def test_dead_levels_finds_a_level_that_changes_no_score():
    model = _tiny().eval()
    probes = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    assert dead_levels(model, probes, None, tolerance=1e-7) == []  # random heads: small, non-zero moves
    with torch.no_grad():  # level 3's tokens no longer depend on its pooled map
        model.tokenizers[2].reduce.weight.zero_()
        model.tokenizers[2].reduce.bias.zero_()
    assert dead_levels(model, probes, None, tolerance=1e-7) == [3]
