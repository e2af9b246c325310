"""ResidualBlockNoBN, ResidualDenseBlock and make_layer: shapes, identities, exact formulas, gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import frame_shapes, seeded_randn, seeds
from vsrblocks.residual import ResidualBlockNoBN, ResidualDenseBlock, make_layer


@given(shape=frame_shapes(), seed=seeds, kernel_size=st.sampled_from([1, 3, 5]))
def test_residual_block_shapes(shape, seed, kernel_size):
    torch.manual_seed(seed)
    block = ResidualBlockNoBN(channels=shape[1], kernel_size=kernel_size)
    x = seeded_randn(shape, seed)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@given(shape=frame_shapes(), seed=seeds, growth=st.integers(1, 5), layers=st.integers(1, 3))
def test_dense_block_shapes(shape, seed, growth, layers):
    torch.manual_seed(seed)
    block = ResidualDenseBlock(channels=shape[1], growth_rate=growth, num_layers=layers)
    x = seeded_randn(shape, seed)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_residual_block_is_identity_when_conv2_is_zero():
    block = ResidualBlockNoBN(channels=4, pytorch_init=True)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = seeded_randn((2, 4, 7, 5), 0)
    assert torch.equal(block(x), x)


def test_dense_block_is_identity_when_fusion_is_zero():
    block = ResidualDenseBlock(channels=4, growth_rate=3, num_layers=2)
    with torch.no_grad():
        block.fusion.weight.zero_()
        block.fusion.bias.zero_()
    x = seeded_randn((2, 4, 6, 7), 0)
    assert torch.equal(block(x), x)


def test_residual_block_formula_and_res_scale():
    torch.manual_seed(0)
    block = ResidualBlockNoBN(channels=4, res_scale=0.2)
    x = seeded_randn((1, 4, 6, 6), 1)
    expected = x + 0.2 * block.conv2(F.relu(block.conv1(x)))
    torch.testing.assert_close(block(x), expected)


def test_residual_block_basicsr_init():
    """BasicSR's default: Kaiming-normal weights scaled by 0.1, zero biases (a deep stack starts near identity)."""
    torch.manual_seed(0)
    block = ResidualBlockNoBN(channels=64)
    for conv in (block.conv1, block.conv2):
        assert torch.all(conv.bias == 0)
        expected_std = 0.1 * (2.0 / (64 * 9)) ** 0.5
        assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.1


def test_dense_block_formula():
    """RDN's RDB: each layer sees the concatenation of the input and all previous layer outputs."""
    torch.manual_seed(0)
    block = ResidualDenseBlock(channels=4, growth_rate=2, num_layers=3)
    x = seeded_randn((1, 4, 5, 6), 1)
    h1 = F.relu(block.layers[0](x))
    h2 = F.relu(block.layers[1](torch.cat((x, h1), 1)))
    h3 = F.relu(block.layers[2](torch.cat((x, h1, h2), 1)))
    expected = x + block.fusion(torch.cat((x, h1, h2, h3), 1))
    torch.testing.assert_close(block(x), expected)
    assert [conv.in_channels for conv in block.layers] == [4, 6, 8]
    assert block.fusion.in_channels == 10 and block.fusion.kernel_size == (1, 1)


def test_rdn_config_parameter_count():
    """RDN config A block (G0 = 64, G = 32, C = 6)."""
    block = ResidualDenseBlock(64, 32, 6)
    convs = sum((64 + k * 32) * 32 * 9 + 32 for k in range(6))
    assert sum(p.numel() for p in block.parameters()) == convs + 256 * 64 + 64


@pytest.mark.parametrize(
    "make", [lambda: ResidualBlockNoBN(channels=2, pytorch_init=True), lambda: ResidualDenseBlock(2, 2, 2)]
)
def test_gradcheck_float64(make):
    torch.manual_seed(0)
    block = make().double()
    x = seeded_randn((1, 2, 3, 4), 0, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("make", [lambda: ResidualBlockNoBN(channels=4), lambda: ResidualDenseBlock(4, 2, 2)])
def test_batch_independent_bf16_and_compile(make):
    torch.manual_seed(0)
    block = make()
    x = seeded_randn((3, 4, 5, 6), 0)
    assert_batch_independent(block, x)
    assert_compiles(block, x)
    assert_half_precision_finite(block, x)


def test_make_layer():
    body = make_layer(lambda: ResidualBlockNoBN(channels=4), 3)
    assert len(body) == 3 and len({id(b) for b in body}) == 3
    assert body[0].conv1.weight.data_ptr() != body[1].conv1.weight.data_ptr()
    assert {k.split(".")[0] for k in body.state_dict()} == {"0", "1", "2"}
    assert len(make_layer(lambda: ResidualBlockNoBN(channels=4), 0)) == 0
    with pytest.raises(ValueError, match="num_blocks"):
        make_layer(lambda: ResidualBlockNoBN(channels=4), -1)


def test_errors():
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) with C=4"):
        ResidualBlockNoBN(channels=4)(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) with C=4"):
        ResidualDenseBlock(channels=4)(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        ResidualBlockNoBN(channels=4)(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match="kernel_size"):
        ResidualBlockNoBN(channels=4, kernel_size=2)
    with pytest.raises(ValueError, match="num_layers"):
        ResidualDenseBlock(channels=4, num_layers=0)
