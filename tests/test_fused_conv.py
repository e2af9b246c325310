import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vsrblocks.fused_conv as fused_conv
from tests.strategies import seeded_randn, seeds, sizes
from vsrblocks.fused_conv import conv2d_activation, conv2d_add, fusion_enabled, unfused
from vsrblocks.residual import ResidualBlockNoBN

needs_kernels = pytest.mark.skipif(not fused_conv._KERNELS, reason="this build of PyTorch has no oneDNN post-op kernels")
formats = st.sampled_from([torch.contiguous_format, torch.channels_last])
#: PyTorch runs small convolutions of a single image as im2col + matrix product, and from batch 2 on with oneDNN:
#: with batches of 2 and 3 every example below takes the fused path (400 random draws checked).
fused_batches = st.integers(min_value=2, max_value=3)


def fused_kernel_calls(run) -> int:
    """How many fused oneDNN convolutions ``run()`` launched."""
    with torch.profiler.profile() as prof:
        run()
    return sum("_convolution_pointwise" in event.name for event in prof.events())


def _conv(seed: int, in_channels: int, out_channels: int, kernel: int, groups: int, stride: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups)


@given(
    batch=fused_batches, height=sizes, width=sizes, groups=st.sampled_from([1, 2, 4]), kernel=st.sampled_from([1, 3, 7]),
    stride=st.sampled_from([1, 2]), slope=st.sampled_from([0.01, 0.1, 0.2]), in_format=formats, seed=seeds,
)
@settings(max_examples=25, deadline=None)
def test_fused_activation_is_bit_identical(batch, height, width, groups, kernel, stride, slope, in_format, seed):
    conv = _conv(seed, 8, 4 * groups, kernel, groups, stride)
    x = seeded_randn((batch, 8, height, width), seed).contiguous(memory_format=in_format)
    with torch.no_grad():
        plain = conv(x)
        relu = conv2d_activation(conv, x, "relu")
        assert torch.equal(relu, F.relu(plain))
        assert torch.equal(conv2d_activation(conv, x, "leaky_relu", slope), F.leaky_relu(plain, slope))
    assert relu.is_contiguous(memory_format=in_format) or min(relu.shape[1], relu.shape[2] * relu.shape[3]) == 1


@given(batch=fused_batches, height=sizes, width=sizes, in_format=formats, other_format=formats, seed=seeds)
@settings(max_examples=25, deadline=None)
def test_fused_addition_is_bit_identical(batch, height, width, in_format, other_format, seed):
    conv = _conv(seed, 6, 6, 3, 1, 1)
    x = seeded_randn((batch, 6, height, width), seed).contiguous(memory_format=in_format)
    other = seeded_randn((batch, 6, height, width), seed + 1).contiguous(memory_format=other_format)
    with torch.no_grad():
        fused = conv2d_add(conv, x, other)
        assert torch.equal(fused, other + conv(x))
    if in_format == other_format:
        assert fused.is_contiguous(memory_format=in_format)


@needs_kernels
@pytest.mark.parametrize(
    ("kernel", "stride", "groups", "memory_format"),
    [(3, 1, 1, torch.contiguous_format), (3, 1, 1, torch.channels_last), (7, 2, 1, torch.contiguous_format),
     (3, 1, 4, torch.channels_last)],
)
def test_the_fused_kernels_run_where_pytorch_picks_onednn(kernel, stride, groups, memory_format):
    conv = _conv(0, 8, 8, kernel, groups, stride)
    x = seeded_randn((2, 8, 11, 13), 0).contiguous(memory_format=memory_format)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 1
        assert fused_kernel_calls(lambda: conv2d_add(conv, x, conv(x))) == 1


@needs_kernels
def test_graph_capture_runs_the_plain_operations(monkeypatch):
    conv = _conv(0, 8, 8, 3, 1, 1)
    x = seeded_randn((2, 8, 11, 13), 0)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 0
        assert fused_kernel_calls(lambda: conv2d_add(conv, x, x)) == 0


@needs_kernels
def test_inference_uses_the_fused_kernels_and_training_the_plain_ones():
    block = ResidualBlockNoBN(channels=4)
    x = torch.randn(2, 4, 6, 7)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: block(x)) == 2
        inferred = block(x)
    assert fused_kernel_calls(lambda: block(x)) == 0
    trained = block(x)
    assert trained.requires_grad and torch.equal(inferred, trained.detach())
    trained.sum().backward()
    assert block.conv1.weight.grad is not None


def test_hooks_see_every_convolution():
    block = ResidualBlockNoBN(channels=4)
    seen = []
    block.conv1.register_forward_hook(lambda module, inputs, output: seen.append("conv1"))
    block.conv2.register_forward_hook(lambda module, inputs, output: seen.append("conv2"))
    with torch.no_grad():
        block(torch.randn(1, 4, 5, 5))
    assert seen == ["conv1", "conv2"]


def test_flop_counter_counts_every_convolution():
    block = ResidualBlockNoBN(channels=4)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        block(torch.randn(1, 4, 5, 5))
    assert counter.get_total_flops() == 2 * (2 * 4 * 4 * 9 * 25)


def test_other_dtypes_and_autocast_run_the_plain_operations():
    conv = nn.Conv2d(3, 3, 3, padding=1).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(conv2d_add(conv, x, x), x + conv(x))
        conv = conv.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv2d_activation(conv, x.float(), "relu")
    assert out.dtype == torch.bfloat16


def test_unfused_context_restores_the_setting():
    assert fusion_enabled()
    with unfused():
        assert not fusion_enabled()
        with pytest.raises(RuntimeError), unfused():
            raise RuntimeError
        assert not fusion_enabled()
    assert fusion_enabled()


@pytest.mark.parametrize("grad", [False, True])
def test_a_residual_of_another_shape_is_a_value_error(grad):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="other: expected .* B=1, C=4, H=5, W=6"):
        conv2d_add(conv, torch.randn(1, 4, 5, 6), torch.randn(1, 4, 1, 1))


@pytest.mark.parametrize("shape", [(4, 5, 6), (1, 3, 5, 6)])
def test_an_input_of_another_shape_is_a_value_error(shape):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\) with C=4"):
        conv2d_activation(conv, torch.randn(shape), "relu")
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\) with C=4"):
        conv2d_add(conv, torch.randn(shape), torch.randn(1, 4, 5, 6))


def test_unknown_activation_is_a_value_error():
    with pytest.raises(ValueError, match="relu"):
        conv2d_activation(nn.Conv2d(1, 1, 1), torch.randn(1, 1, 2, 2), "gelu")


@needs_kernels
def test_a_convolution_without_bias():
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 6, 7)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_add(conv, x, x)) == 1
        assert torch.equal(conv2d_activation(conv, x, "leaky_relu", 0.1), F.leaky_relu(conv(x), 0.1))
        assert torch.equal(conv2d_add(conv, x, x), x + conv(x))
