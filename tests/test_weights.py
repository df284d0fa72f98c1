import pytest
import torch

from bpclip_core.errors import WeightsNotFoundError
from bpclip_core.model.backbone import build_backbone
from bpclip_core.model.pretrained import (
    build_clip_model,
    clip_weights_path,
    load_torchvision_weights,
    split_clip_name,
    torchvision_weights_path,
)


def test_torchvision_weights_come_from_torch_home(planted_resnet18, monkeypatch):
    path = torchvision_weights_path("resnet18")
    assert path.name == "resnet18-f37072fd.pth" and path.parent.name == "checkpoints"
    state = load_torchvision_weights("resnet18")
    assert torch.equal(state["fc.weight"], planted_resnet18["fc.weight"])
    backbone = build_backbone("resnet18", pretrained=True)
    assert torch.equal(backbone.stages[0][0].conv1.weight, planted_resnet18["layer1.0.conv1.weight"])


def test_missing_torchvision_weights_never_download_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="resnet34-b627a593.pth") as info:
        load_torchvision_weights("resnet34", allow_download=True)
    assert "TORCH_HOME" in str(info.value)
    with pytest.raises(ValueError, match="no ImageNet weights known"):
        torchvision_weights_path("vgg11")


def test_clip_weights_come_from_the_hugging_face_cache(planted_clip_rn50):
    path = clip_weights_path("RN50/openai")
    assert path.name == "open_clip_model.safetensors" and "models--timm--resnet50_clip.openai" in str(path)
    model = build_clip_model("RN50/openai")
    assert torch.equal(model.visual.conv1.weight, planted_clip_rn50["visual.conv1.weight"])
    backbone = build_backbone("clip-rn50", pretrained=True)
    assert torch.equal(backbone.stages[2][0].conv1.weight, planted_clip_rn50["visual.layer3.0.conv1.weight"])


def test_missing_clip_weights_name_file_and_folder():
    with pytest.raises(WeightsNotFoundError, match="open_clip_model.safetensors") as info:
        clip_weights_path("RN101/openai", allow_download=True)
    message = str(info.value)
    assert "models--timm--resnet101_clip.openai" in message and "HF_HUB_OFFLINE is set" in message
    with pytest.raises(WeightsNotFoundError, match="no hub weights"):
        clip_weights_path("RN50/not-a-tag")
    with pytest.raises(ValueError, match="arch/pretrained"):
        split_clip_name("RN50")
