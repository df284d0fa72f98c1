import pytest
import torch

from bpclip_core import BPCLIP, InputError, preset


def test_nr_forward_shapes_and_probabilities(nr_model, images):
    out = nr_model(images)
    assert out.score.shape == (2,)
    assert out.level_probabilities.shape == (2, 4, 40)
    assert torch.allclose(out.level_probabilities.sum(-1), torch.ones(2, 4))
    assert torch.allclose(out.adjective_probabilities, out.level_probabilities.mean(1))


def test_fr_forward_and_identical_versus_distorted(fr_model, images):
    reference = images
    distorted = (images + 0.2 * torch.randn_like(images)).clamp(0, 1)
    same = fr_model(reference, reference)
    different = fr_model(distorted, reference)
    assert same.score.shape == (2,)
    assert not torch.equal(same.score, different.score)  # a random tiny model barely responds (~1e-6)
    changed = [
        (a - b).abs().max()
        for a, b in zip(fr_model.tokens(reference, reference), fr_model.tokens(distorted, reference))
    ]
    assert min(changed) > 1e-3  # every level's tokens see the distortion
    # the difference channels of every level's gate input are exactly zero for identical pairs
    levels = fr_model.backbone(torch.cat([reference, reference]))
    assert all(torch.equal(f[:2], f[2:]) for f in levels)


def test_fr_accepts_any_equal_size_and_non_square(fr_model):
    x = torch.rand(1, 3, 64, 96)
    assert fr_model(x, x).score.shape == (1,)


def _trainable_grads(model, out):
    out.score.sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_backward_reaches_trainable_parts_not_frozen_ones(mode, tiny_text_embeddings, images):
    torch.manual_seed(0)
    model = BPCLIP(preset("tiny", mode=mode), tiny_text_embeddings).train()
    out = model(images, images.flip(-1) if mode == "fr" else None)
    grads = _trainable_grads(model, out)
    for name in [
        "backbone.stem.0.weight",
        "backbone.stages.3.1.conv2.weight",
        "gated_pooling.0.gate.block.0.weight",
        "tokenizers.4.reduce.weight",
        "positional_encoding.embedding",
        "information_branch.blocks.3.key.weight",
        "weight_branch.blocks.0.query.weight",
        "fusion.2.weight.0.0.weight",
        "clip_mapping.1.project.2.weight",
        "regressor.mlp.0.weight",
    ]:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    bn_params = [n for n, p in model.named_parameters() if "backbone" in n and not p.requires_grad]
    assert bn_params and all(grads[n] is None for n in bn_params)
    assert "text_embeddings" not in dict(model.named_parameters())
    assert not model.text_embeddings.requires_grad


def test_a_training_batchnorm_normalises_an_fr_pair_with_shared_statistics(tiny_text_embeddings):
    torch.manual_seed(0)
    model = BPCLIP(preset("tiny", mode="fr"), tiny_text_embeddings)
    model.backbone.set_batchnorm_training(True)
    model.train()
    reference = torch.rand(2, 3, 64, 64)
    distorted = torch.stack([reference[0], reference[1].flip(-1) * 0.5])  # pair 0 is undistorted
    tokens = model.tokens(distorted, reference)
    levels, reference_levels = model._backbone_levels(distorted, reference)
    # one pass: the undistorted pair's features agree although the two batches' statistics differ
    assert all(torch.allclose(f[0], r[0], atol=1e-5) for f, r in zip(levels, reference_levels))
    separate = [model.backbone(distorted)[-1][0], model.backbone(reference)[-1][0]]
    assert not torch.allclose(*separate, atol=1e-3)  # two passes would not
    assert all(torch.isfinite(t).all() for t in tokens)


def test_text_embeddings_shape_is_checked(tiny_text_embeddings):
    with pytest.raises(ValueError, match="text_embeddings must have shape"):
        BPCLIP(preset("tiny"), tiny_text_embeddings[:10])


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ([[0.5]], TypeError, "must be a torch.Tensor"),
        (torch.rand(2, 64, 64), InputError, "3 \\(RGB\\) channels"),
        (torch.rand(2, 1, 3, 64, 64), InputError, "must have shape"),
        (torch.rand(2, 4, 64, 64), InputError, "3 \\(RGB\\) channels"),
        (torch.rand(1, 3, 16, 64), InputError, "at least 32 px"),
        (torch.full((1, 3, 64, 64), float("nan")), InputError, "NaN or Inf"),
        (torch.full((1, 3, 64, 64), float("inf")), InputError, "NaN or Inf"),
        (torch.rand(1, 3, 64, 64) * 255, InputError, "values must lie in \\[0, 1\\]"),
        (torch.rand(1, 3, 64, 64) - 0.5, InputError, "values must lie in"),
        (torch.rand(0, 3, 64, 64), InputError, "empty batch"),
    ],
)
def test_bad_inputs_get_clear_errors(nr_model, bad, error, message):
    with pytest.raises(error, match=message):
        nr_model(bad)


def test_data_range_255_matches_unit_range(nr_model, images):
    assert torch.allclose(nr_model(images * 255, data_range=255.0).score, nr_model(images).score, atol=1e-5)
    single = nr_model(images[0]).score  # a (3, H, W) image is a batch of one
    assert single.shape == (1,)


def test_mode_errors(nr_model, fr_model, images):
    with pytest.raises(InputError, match="no-reference .* takes no reference"):
        nr_model(images, images)
    with pytest.raises(InputError, match="full-reference .* pass reference"):
        fr_model(images)
    with pytest.raises(InputError, match="same shape"):
        fr_model(images, images[:, :, :48])


def test_table_v_ablation_switches(tiny_text_embeddings, images, tmp_path):
    from bpclip_core.running.engine import compile_attention
    from bpclip_core.weights.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    full = BPCLIP(preset("tiny"), tiny_text_embeddings)
    ablated = BPCLIP(
        preset("tiny", attention_direction="top-down", weight_branch=False, clip_text=False), tiny_text_embeddings
    )
    assert ablated.weight_branch is None and all(f.weight is None for f in ablated.fusion)
    assert not any(k.startswith("weight_branch") for k in ablated.state_dict())
    assert sum(p.numel() for p in ablated.parameters()) < sum(p.numel() for p in full.parameters())
    # top-down: the deeper level i+1 queries level i, keeping the query's residual
    tokens = [torch.randn(2, 4, 32) for _ in range(5)]
    block = ablated.information_branch.blocks[1]
    expected = block(tokens[2], tokens[1]) + tokens[2]
    assert torch.allclose(ablated.information_branch(tokens)[1], expected)
    assert not torch.allclose(
        full.information_branch(tokens)[1], full.information_branch.blocks[1](tokens[2], tokens[1])
    )
    # no CLIP text: the anchors are learned parameters and get gradients
    assert isinstance(ablated.text_embeddings, torch.nn.Parameter) and "text_embeddings" not in dict(
        full.named_parameters()
    )
    ablated.train()(images).score.sum().backward()
    assert ablated.text_embeddings.grad is not None and ablated.text_embeddings.grad.abs().sum() > 0
    restored = load_checkpoint(save_checkpoint(ablated.eval(), tmp_path / "ablated.safetensors"))
    assert restored.config == ablated.config
    with torch.inference_mode():
        assert torch.equal(restored(images).score, ablated(images).score)
        scripted = compile_attention(restored, "script")(images).score  # TorchScript takes the switches too
    assert torch.allclose(scripted, ablated(images).score, atol=1e-5)
    with pytest.raises(ValueError, match="attention_direction"):
        preset("tiny", attention_direction="sideways")


def test_learned_temperature_is_clamped_trained_and_saved(tiny_text_embeddings, images, tmp_path):
    from bpclip_core.model.config import BPCLIPConfig
    from bpclip_core.training.trainer import parameter_groups
    from bpclip_core.weights.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = BPCLIP(preset("tiny", similarity_temperature=0.1, learn_temperature=True), tiny_text_embeddings)
    assert float(model.temperature) == pytest.approx(0.1)
    model.train()(images).score.sum().backward()
    assert model.log_logit_scale.grad is not None and float(model.log_logit_scale.grad) != 0
    groups = parameter_groups(model, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and groups[1]["params"] == [model.log_logit_scale]
    with torch.no_grad():
        model.log_logit_scale.fill_(20.0)  # CLIP's clamp: the logit scale stays at most 100
    assert float(model.temperature) == pytest.approx(0.01)
    model.log_logit_scale.grad = None
    model.temperature.backward()  # past the bound, the parameter still gets a gradient back
    assert float(model.log_logit_scale.grad) < 0
    with torch.no_grad():
        model.log_logit_scale.fill_(-5.0)
    assert float(model.temperature) == pytest.approx(1.0)
    restored = load_checkpoint(save_checkpoint(model.eval(), tmp_path / "t.safetensors"))
    assert float(restored.temperature) == pytest.approx(1.0)
    with torch.inference_mode():
        assert torch.equal(restored(images).score, model(images).score)
    # a checkpoint config written before the field existed has a fixed temperature
    old = preset("tiny").to_dict()
    del old["learn_temperature"]
    assert BPCLIPConfig.from_dict(old).learn_temperature is False
    assert "log_logit_scale" not in dict(BPCLIP(preset("tiny"), tiny_text_embeddings).named_parameters())
    with pytest.raises(ValueError, match="learned temperature starts in"):
        preset("tiny", similarity_temperature=5.0, learn_temperature=True)
