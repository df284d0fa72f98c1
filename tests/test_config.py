import pytest
import torch

from bpclip_core.config import BPCLIPConfig, ScoreScale, preset


def test_presets_and_round_trip():
    tiny = preset("tiny", mode="fr")
    assert tiny.mode == "fr" and tiny.backbone == "resnet18"
    paper = preset("paper")
    assert (paper.backbone, paper.image_size, paper.mode) == ("resnet50", 384, "nr")
    assert BPCLIPConfig.from_dict(tiny.to_dict()) == tiny


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        BPCLIPConfig(mode="xx")
    with pytest.raises(ValueError, match="divisible"):
        BPCLIPConfig(token_dim=30, num_heads=8)
    with pytest.raises(ValueError, match="unknown BPCLIP config fields"):
        BPCLIPConfig.from_dict({"mode": "nr", "depth": 3})
    with pytest.raises(ValueError, match="unknown config preset"):
        preset("huge")


def test_score_scale_normalises_and_flips_dmos():
    mos = ScoreScale(mos_min=1, mos_max=5)
    assert mos.normalise(5.0) == 1.0 and mos.to_mos(0.5) == 3.0
    dmos = ScoreScale(mos_min=0, mos_max=100, higher_is_better=False)
    values = torch.tensor([0.0, 25.0, 100.0])
    assert torch.allclose(dmos.normalise(values), torch.tensor([1.0, 0.75, 0.0]))
    assert torch.allclose(dmos.to_mos(dmos.normalise(values)), values)
    with pytest.raises(ValueError, match="must exceed"):
        ScoreScale(mos_min=1, mos_max=1)
