import pytest
import torch
import torch.nn.functional as F

from bpclip_core.model.config import BPCLIPConfig, ScoreScale, preset


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


def test_activations_follow_the_figures_and_old_configs_keep_theirs():
    from torch import nn

    from bpclip_core import BPCLIP

    assert preset("paper").activations == "figures" and preset("tiny").activations == "figures"
    assert preset("lite").activations == "figures" and preset("lite").backbone == "efficientnet_lite2"
    stored = preset("tiny").to_dict()
    del stored["activations"]  # a config written before the field existed
    assert BPCLIPConfig.from_dict(stored).activations == "gelu-mlp"
    with pytest.raises(ValueError, match="activations"):
        preset("tiny", activations="swish")

    figures = BPCLIP(preset("tiny"), torch.randn(40, 32))
    gate = [type(m) for m in figures.gated_pooling[0].gate.block]
    assert gate == [nn.Conv2d, nn.GELU, nn.Conv2d, nn.GELU, nn.Conv2d]  # Fig. 3
    assert isinstance(figures.tokenizers[0].activation, nn.GELU)  # Fig. 3: AvgPool-Conv-GELU
    assert [type(m) for m in figures.fusion[0].information] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]  # Fig. 2
    old = BPCLIP(preset("tiny", activations="gelu-mlp"), torch.randn(40, 32))
    assert [type(m) for m in old.gated_pooling[0].gate.block][1] is nn.ReLU
    assert isinstance(old.tokenizers[0].activation, nn.Identity)
    assert [type(m) for m in old.fusion[0].information] == [nn.Linear, nn.GELU, nn.Linear]
    assert figures.state_dict().keys() == old.state_dict().keys()  # same tensors, other functions
    model = figures.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        levels = model.backbone(x)
        grid = tuple(levels[-1].shape[-2:])
        position = model.positional_encoding(grid)
        folded = model.tokens(x)  # NR folds the reduction into W_f; the GELU must still follow it
        for level, glp, tok, got in zip(levels, model.gated_pooling, model.tokenizers, folded):
            plain = F.gelu(tok.reduce(glp(level, grid))).flatten(2).transpose(1, 2) + position
            assert torch.allclose(got, plain, atol=1e-5)
