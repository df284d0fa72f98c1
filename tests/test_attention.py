import math

import pytest
import torch

from bpclip_core.model.attention import MultiHeadAttention, MultiscaleCrossAttention, SelfAttentionWeight


def _tokens(seed=0, levels=5, n=2, length=6, dim=8):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, length, dim, generator=generator) for _ in range(levels)]


def test_single_head_attention_is_scaled_dot_product():  # eq. 3
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, num_heads=1)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    q, k, v = attn.query(x), attn.key(y), attn.value(y)
    expected = attn.out(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1) @ v)
    assert torch.allclose(attn(x, y), expected, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, num_heads=3)


def test_msca_is_bottom_up_with_residual():  # eq. 4
    torch.manual_seed(0)
    msca = MultiscaleCrossAttention(8, num_heads=2, num_levels=5)
    tokens = _tokens()
    out = msca(tokens)
    assert len(out) == 4 and all(o.shape == tokens[0].shape for o in out)
    changed = [t.clone() for t in tokens]
    changed[2] = changed[2] + 1.0  # level 3 is the context of level 2 and the query of level 3
    out2 = msca(changed)
    assert torch.allclose(out[0], out2[0])  # level 1 attends only to level 2
    assert not torch.allclose(out[1], out2[1])  # level 2 queries level 3
    for block in msca.blocks:  # with a zero output projection only the residual is left
        torch.nn.init.zeros_(block.out.weight)
        torch.nn.init.zeros_(block.out.bias)
    assert all(torch.equal(o, t) for o, t in zip(msca(tokens), tokens[:4]))


def test_sa_attends_within_each_level_with_residual():  # eq. 5
    torch.manual_seed(0)
    sa = SelfAttentionWeight(8, num_heads=2, num_levels=5)
    tokens = _tokens()
    out = sa(tokens)
    changed = [t.clone() for t in tokens]
    changed[1] = changed[1] * 2
    out2 = sa(changed)
    assert torch.allclose(out[0], out2[0]) and torch.allclose(out[2], out2[2])
    assert not torch.allclose(out[1], out2[1])
    expected = sa.blocks[3](tokens[3], tokens[3]) + tokens[3]
    assert torch.allclose(out[3], expected)


@pytest.mark.parametrize("block_type", [MultiscaleCrossAttention, SelfAttentionWeight])
def test_torchscript_matches_eager(block_type):
    torch.manual_seed(0)
    block = block_type(8, num_heads=2, num_levels=5).eval()
    scripted = torch.jit.script(block)
    tokens = _tokens(seed=3)
    for eager, compiled in zip(block(tokens), scripted(tokens)):
        assert torch.allclose(eager, compiled, atol=1e-5)


@pytest.mark.parametrize("top_down", [False, True])
def test_each_fused_pair_describes_one_level(top_down):
    """Eq. 6 multiplies information output i by weight i: both must come from the same level."""
    torch.manual_seed(0)
    information = MultiscaleCrossAttention(16, 2, 5, top_down=top_down)
    weight = SelfAttentionWeight(16, 2, 5, top_down=top_down)
    tokens = [torch.randn(2, 4, 16) for _ in range(5)]
    deepest_changed = [*tokens[:4], tokens[4] + 1.0]
    info_moved = [not torch.allclose(a, b) for a, b in zip(information(tokens), information(deepest_changed))]
    weight_moved = [not torch.allclose(a, b) for a, b in zip(weight(tokens), weight(deepest_changed))]
    # the deepest level reaches pair 3 only: as a key bottom-up, as the query top-down
    assert info_moved == [False, False, False, True]
    # top-down, output 3 is level 5's (query and residual), and so is weight 3; bottom-up, no
    # weight sees level 5 and output 3 is level 4's (its residual), as weight 3 is
    assert weight_moved == [False, False, False, top_down]
    shallowest_changed = [tokens[0] + 1.0, *tokens[1:]]
    weight_moved = [not torch.allclose(a, b) for a, b in zip(weight(tokens), weight(shallowest_changed))]
    assert weight_moved == [not top_down, False, False, False]
