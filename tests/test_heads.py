import torch
import torch.nn.functional as F

from bpclip_core.model.heads import BranchFusion, CLIPSpaceMapping, QualityRegressor, adjective_probabilities


def test_fusion_weights_lie_in_zero_one_and_multiply():  # eq. 6
    torch.manual_seed(0)
    fusion = BranchFusion(8, 16)
    info, weight = torch.randn(2, 4, 8), torch.randn(2, 4, 8) * 10
    weights = fusion.weight(weight)
    assert bool(((weights > 0) & (weights < 1)).all())
    assert torch.allclose(fusion(info, weight), fusion.information(info) * weights)


def test_clip_mapping_gives_one_vector_per_image():  # eq. 7
    mapping = CLIPSpaceMapping(8, 16, 12)
    tokens = torch.randn(3, 5, 8)
    x = mapping(tokens)
    assert x.shape == (3, 12)
    assert torch.allclose(x, mapping.project(tokens).mean(1), atol=1e-6)  # the mean moved before the last layer


def test_adjective_probabilities_are_a_softmax_of_cosines():  # eq. 8
    torch.manual_seed(0)
    image, text = torch.randn(4, 12), torch.randn(40, 12)
    probs = adjective_probabilities(image, text, temperature=0.01)
    assert probs.shape == (4, 40)
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    assert torch.allclose(adjective_probabilities(image * 7.0, text * 0.1, 0.01), probs, atol=1e-6)
    cosine = F.cosine_similarity(image[:, None], text[None], dim=-1)
    assert torch.equal(probs.argmax(-1), cosine.argmax(-1))


def test_regressor_reads_all_levels():  # eq. 9
    regressor = QualityRegressor(4, 40, 16)
    assert regressor.mlp[0].in_features == 160
    assert regressor(torch.rand(3, 4, 40)).shape == (3,)
