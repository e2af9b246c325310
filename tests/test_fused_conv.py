import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vsrblocks.fused_conv as fused_conv
from tests.checks import fused_kernel_calls
from tests.strategies import seeded_rand, seeded_randn, seeds, sizes
from vsrblocks.fused_conv import conv2d_activation, conv2d_add, fusion_enabled, unfused
from vsrblocks.residual import ResidualBlockNoBN

needs_kernels = pytest.mark.skipif(
    not fused_conv._KERNELS, reason="this build of PyTorch has no oneDNN post-op kernels"
)
formats = st.sampled_from([torch.contiguous_format, torch.channels_last])
#: PyTorch runs small convolutions of a single image as im2col + matrix product, and from batch 2 on with oneDNN:
#: with batches of 2 and 3 every example below takes the fused path (400 random draws checked).
fused_batches = st.integers(min_value=2, max_value=3)


def _conv(seed: int, in_channels: int, out_channels: int, kernel: int, groups: int, stride: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups)


@given(
    batch=fused_batches,
    height=sizes,
    width=sizes,
    groups=st.sampled_from([1, 2, 4]),
    kernel=st.sampled_from([1, 3, 7]),
    stride=st.sampled_from([1, 2]),
    slope=st.sampled_from([0.01, 0.1, 0.2]),
    in_format=formats,
    seed=seeds,
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
    [
        (3, 1, 1, torch.contiguous_format),
        (3, 1, 1, torch.channels_last),
        (7, 2, 1, torch.contiguous_format),
        (3, 1, 4, torch.channels_last),
    ],
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_dtypes_run_the_plain_operations(dtype):
    """Only float32 is fused (module notes: behind the NaN guard bfloat16 fusion measured slower)."""
    conv = _conv(0, 8, 8, 3, 1, 1).to(dtype)
    x = seeded_randn((2, 8, 11, 13), 0, dtype)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_add(conv, x, x)) == 0
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 0
        assert torch.equal(conv2d_add(conv, x, x), x + conv(x))
        assert torch.equal(conv2d_activation(conv, x, "leaky_relu", 0.1), F.leaky_relu(conv(x), 0.1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fused_kernel_calls(lambda: conv2d_activation(conv.float(), x.float(), "relu")) == 0


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


# --- Non-finite values: the fused path must keep every NaN and infinity the plain operations give. ---

NAN, INF = float("nan"), float("inf")
non_finite = st.sampled_from([NAN, INF, -INF])


def _poisoned(x: torch.Tensor, value: float, seed: int, count: int = 1) -> torch.Tensor:
    """A copy of ``x`` (same memory format) with ``count`` elements at seeded positions set to ``value``."""
    poisoned = x.clone()
    positions = torch.randint(x.numel(), (count,), generator=torch.Generator().manual_seed(seed))
    poisoned[torch.unravel_index(positions, x.shape)] = value
    return poisoned


def assert_same_as_plain(run) -> torch.Tensor:
    """``run()`` without gradients gives the plain operations' result, bit for bit, NaN where they give NaN."""
    with torch.no_grad():
        fused = run()
        with unfused():
            plain = run()
    torch.testing.assert_close(fused, plain, rtol=0, atol=0, equal_nan=True)
    return fused


@given(
    batch=fused_batches,
    height=sizes,
    width=sizes,
    value=non_finite,
    where=st.sampled_from(["x", "weight", "bias"]),
    activation=st.sampled_from(["relu", "leaky_relu"]),
    in_format=formats,
    count=st.integers(1, 3),
    seed=seeds,
)
@settings(max_examples=20, deadline=None)
def test_fused_activation_keeps_non_finite_values(
    batch, height, width, value, where, activation, in_format, count, seed
):
    conv = _conv(seed, 8, 8, 3, 1, 1).requires_grad_(False)
    x = seeded_randn((batch, 8, height, width), seed).contiguous(memory_format=in_format)
    if where == "x":
        x = _poisoned(x, value, seed, count)
    else:
        getattr(conv, where).copy_(_poisoned(getattr(conv, where), value, seed, count))
    out = assert_same_as_plain(lambda: conv2d_activation(conv, x, activation, 0.1))
    if value != value:  # a NaN anywhere reaches at least one output
        assert out.isnan().any()


@given(batch=fused_batches, height=sizes, width=sizes, scale=st.sampled_from([1e20, 1e30, 1e36, 3e38]), seed=seeds)
@settings(max_examples=8, deadline=None)
def test_fused_activation_keeps_overflow(batch, height, width, scale, seed):
    """Finite but huge inputs: sums overflow to infinities of both signs, and ``inf - inf`` is NaN."""
    conv = _conv(seed, 8, 8, 3, 1, 1).requires_grad_(False)
    x = scale * seeded_randn((batch, 8, height, width), seed)
    for activation in ("relu", "leaky_relu"):
        assert_same_as_plain(lambda activation=activation: conv2d_activation(conv, x, activation, 0.1))


@given(
    batch=fused_batches, height=sizes, width=sizes, value=non_finite, into=st.sampled_from(["x", "other"]), seed=seeds
)
@settings(max_examples=10, deadline=None)
def test_fused_addition_keeps_non_finite_values(batch, height, width, value, into, seed):
    conv = _conv(seed, 6, 6, 3, 1, 1).requires_grad_(False)
    tensors = {
        "x": seeded_randn((batch, 6, height, width), seed),
        "other": seeded_randn((batch, 6, height, width), seed + 1),
    }
    tensors[into] = _poisoned(tensors[into], value, seed)
    assert_same_as_plain(lambda: conv2d_add(conv, tensors["x"], tensors["other"]))


@needs_kernels
def test_non_finite_input_or_weights_run_the_plain_operations_and_finite_ones_the_fused_kernel():
    conv = _conv(0, 8, 8, 3, 1, 1).requires_grad_(False)
    x = seeded_randn((2, 8, 11, 13), 0)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 1
        assert fused_kernel_calls(lambda: conv2d_activation(conv, _poisoned(x, NAN, 0), "relu")) == 0
        assert fused_kernel_calls(lambda: conv2d_activation(conv, 1e35 * x, "relu")) == 0
        conv.weight[0, 0, 0, 0] = NAN
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "leaky_relu")) == 0


@needs_kernels
@pytest.mark.parametrize("change", ["in place", "swapped data", "bias in place", "through .data"])
def test_a_change_of_the_weights_after_a_fused_call_is_seen(change):
    """In-place writes, ``param.data = ...`` swaps (as ``low_precision_weights`` does) and writes through
    ``param.data`` are all seen by the next call."""
    conv = _conv(0, 8, 8, 3, 1, 1)
    x = seeded_randn((2, 8, 11, 13), 0)
    with torch.no_grad():
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 1
        if change == "in place":
            conv.weight[1, 2, 0, 0] = INF
        elif change == "bias in place":
            conv.bias[3] = NAN
        elif change == "through .data":
            conv.weight.data[0, 1, 2, 2] = NAN  # not seen by the version counter
        else:
            conv.weight.data = _poisoned(conv.weight.data, NAN, 0)
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 0
        assert_same_as_plain(lambda: conv2d_activation(conv, x, "relu"))
        if change == "swapped data":
            conv.weight.data = conv.weight.data.nan_to_num(0.0)
        else:
            conv.weight.nan_to_num_(0.0, 0.0, 0.0)
            conv.bias.nan_to_num_(0.0)
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 1


@needs_kernels
def test_inference_tensor_weights_are_checked_on_every_call():
    with torch.inference_mode():
        conv = _conv(0, 8, 8, 3, 1, 1)
        x = seeded_randn((2, 8, 11, 13), 0)
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 1
        conv.weight[0, 0, 0, 0] = NAN
        assert fused_kernel_calls(lambda: conv2d_activation(conv, x, "relu")) == 0


def test_largest_magnitude_in_any_memory_format():
    x = seeded_randn((2, 3, 4, 5), 0)
    x[1, 2, 3, 4] = -7.0
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(1, 3), x[:, :, ::2], x[0, 0, 0]):
        assert fused_conv._largest_magnitude(t) == t.abs().max().item()
    x[0, 1, 2, 3] = NAN
    assert math.isnan(fused_conv._largest_magnitude(x.contiguous(memory_format=torch.channels_last)))
    assert fused_conv._largest_magnitude(torch.empty(0, 3)) == 0.0


def _fused_blocks():
    """Every block whose forward uses the fused convolutions, each with a builder of (module, inputs)."""
    from reference_models import create_model  # noqa: PLC0415 (the networks load on first use)
    from vsrblocks.align.boff import BOFF, ResidualBlocksWithInputConv  # noqa: PLC0415
    from vsrblocks.align.spynet import SPyNet, SPyNetBasicModule  # noqa: PLC0415

    def clip(seed, frames=3, channels=3, size=8):
        return seeded_rand((2, frames, channels, size, size), seed)

    return {
        "ResidualBlockNoBN": lambda seed: (ResidualBlockNoBN(channels=8), (seeded_randn((2, 8, 7, 9), seed),)),
        "ResidualBlocksWithInputConv": lambda seed: (
            ResidualBlocksWithInputConv(5, 8, num_blocks=2),
            (seeded_randn((2, 5, 7, 9), seed),),
        ),
        "SPyNetBasicModule": lambda seed: (SPyNetBasicModule((8, 16, 8, 4)), (seeded_randn((2, 8, 9, 11), seed),)),
        "SPyNet": lambda seed: (
            SPyNet((8, 16, 8, 4)),
            (seeded_rand((2, 3, 16, 16), seed), seeded_rand((2, 3, 16, 16), seed + 1)),
        ),
        "BOFF": lambda seed: (
            BOFF(4, num_blocks=1),
            (clip(seed, channels=4), clip(seed + 1), (clip(seed + 2, channels=2), clip(seed + 3, channels=2))),
        ),
        "VSRT": lambda seed: (create_model("vsrt", "tiny"), (clip(seed),)),
    }


FUSED_BLOCKS = list(_fused_blocks())


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("block", FUSED_BLOCKS)
@given(seed=seeds)
@settings(max_examples=2, deadline=None)
def test_fused_blocks_keep_non_finite_inputs(block, value, seed):
    """A NaN or infinite element in the first input: in ``eval()`` without gradients the block gives exactly
    what the plain operations give (a NaN pixel through SPyNet's ReLU convolutions used to come out finite)."""
    torch.manual_seed(seed)
    module, inputs = _fused_blocks()[block](seed)
    module = module.eval()
    poisoned = (_poisoned(inputs[0], value, seed), *inputs[1:])
    out = assert_same_as_plain(lambda: module(*poisoned))
    if value != value and block != "VSRT":  # VSRT samples around bad flows; the others carry the NaN forward
        assert out.isnan().any()
