import pytest
import torch

from bpclip_core.backbone import build_backbone, fold_frozen_batchnorm


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("resnet18", (64, 64, 128, 256, 512)),
        ("resnet50", (64, 256, 512, 1024, 2048)),
        ("clip-rn50", (64, 256, 512, 1024, 2048)),
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


@pytest.mark.parametrize("name", ["resnet18", "clip-rn50"])
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
