"""GaussianCrossFrameAttention: official parity, a dense reference at any size, chunking, the windowed mode and
its error bound, the small/large sigma limits, bounded memory, batch independence, errors, compile, bf16."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.official import MANA_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import batches, seeded_randn, seeds, sizes
from vsrblocks.attention.gaussian_cross_frame import (
    DEFAULT_CHUNK_BYTES,
    GaussianCrossFrameAttention,
    default_chunk_size,
    gaussian_cross_frame_attention,
)

CROSS_KEYS = ("norm", "g", "theta", "phi", "W_z", "std")


def dense_reference(query, keys, values, sigma) -> torch.Tensor:
    """The official computation written out densely: full (N x N) distance matrix, softmax, times Gaussian."""
    b, t, c, h, w = keys.shape
    n = h * w
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack((xs.flatten(), ys.flatten()), 1).to(query.dtype)
    dist = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)  # (N, N), p = y * W + x
    gauss = torch.exp(-0.5 * dist / torch.as_tensor(sigma, dtype=query.dtype) ** 2)
    q = query.reshape(b, c, n).transpose(1, 2)  # (B, N, C)
    reads = []
    for f in range(t):
        k = keys[:, f].reshape(b, c, n)
        v = values[:, f].reshape(b, -1, n).transpose(1, 2)
        attn = torch.softmax(q @ k, dim=-1) * gauss
        reads.append((attn @ v).transpose(1, 2).reshape(b, -1, h, w))
    return torch.cat(reads, dim=1)


def official_block(chunk_size=None, **kwargs) -> tuple[GaussianCrossFrameAttention, dict]:
    data = load_official(FIXTURE)
    block = GaussianCrossFrameAttention(data["config"]["in_channels"], 7, chunk_size=chunk_size, **kwargs)
    prefix = "nonloc_spatial."
    own = {
        k[len(prefix) :]: v
        for k, v in data["state_dict"].items()
        if k.startswith(prefix) and k[len(prefix) :].split(".")[0] in CROSS_KEYS
    }
    block.load_state_dict(own, strict=True)
    return block.eval(), data


def _qkv(b, t, c, cv, h, w, seed, dtype=torch.float32):
    return (
        seeded_randn((b, c, h, w), seed, dtype),
        seeded_randn((b, t, c, h, w), seed + 1, dtype),
        seeded_randn((b, t, cv, h, w), seed + 2, dtype),
    )


# ----------------------------------------------------------------------------------------------- official parity


@pytest.mark.thread_counts
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 192])
def test_official_parity_readout_and_W_y(num_threads, chunk_size):
    block, data = official_block(chunk_size)
    inter = data["intermediates"]
    with torch.no_grad():
        readout = block.readout(inter["nonloc_in"])
        w_y = block(inter["nonloc_in"])
    torch.testing.assert_close(readout, inter["nonloc_corr_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(w_y, inter["nonloc_W_y"], atol=1e-5, rtol=0)


def test_official_D_is_the_coordinate_gaussian_geometry():
    data = load_official(FIXTURE)
    h, w = data["config"]["height"], data["config"]["width"]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack((xs.flatten(), ys.flatten()), 1).float()
    torch.testing.assert_close(((pos[:, None] - pos[None]) ** 2).sum(-1), data["state_dict"]["nonloc_spatial.D"])


# ------------------------------------------------------------------------------------------ dense reference, sizes


@given(
    batch=batches,
    frames=st.integers(1, 4),
    height=sizes,
    width=sizes,
    chunk=st.one_of(st.none(), st.integers(1, 40)),
    sigma=st.floats(0.5, 6.0),
    seed=seeds,
)
def test_functional_matches_dense_reference_any_size(batch, frames, height, width, chunk, sigma, seed):
    q, k, v = _qkv(batch, frames, 4, 3, height, width, seed)
    out = gaussian_cross_frame_attention(q, k, v, sigma, chunk_size=chunk)
    assert out.shape == (batch, frames * 3, height, width)
    torch.testing.assert_close(out, dense_reference(q, k, v, sigma), atol=1e-5, rtol=0)


@given(
    batch=batches,
    frames=st.sampled_from([1, 3, 5]),
    channels=st.sampled_from([2, 4, 8]),
    height=sizes,
    width=sizes,
    seed=seeds,
)
def test_module_shapes_odd_sizes_and_dense_reference(batch, frames, channels, height, width, seed):
    torch.manual_seed(seed)
    block = GaussianCrossFrameAttention(channels, frames, num_groups=2, init_sigma=2.5, zero_init=False).eval()
    clip = seeded_randn((batch, frames, channels, height, width), seed)
    with torch.no_grad():
        out = block(clip)
        normed = block.norm(clip.flatten(0, 1)).unflatten(0, clip.shape[:2])
        flat = normed.flatten(0, 1)
        ref = dense_reference(
            block.phi(normed[:, frames // 2]),
            block.theta(flat).unflatten(0, clip.shape[:2]),
            block.g(flat).unflatten(0, clip.shape[:2]),
            block.std,
        )
    assert out.shape == (batch, channels, height, width)
    torch.testing.assert_close(out, block.W_z(ref), atol=1e-5, rtol=0)


def test_group_norm_is_per_frame():
    """Scaling one frame's features does not change another frame's normalised keys/values."""
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(8, 3, num_groups=2).eval()
    clip = torch.randn(1, 3, 8, 5, 6)
    scaled = clip.clone()
    scaled[:, 0] = scaled[:, 0] * 10 + 3
    torch.testing.assert_close(block.normalize(clip)[:, 1:], block.normalize(scaled)[:, 1:])
    torch.testing.assert_close(block.normalize(clip)[:, 0], block.normalize(scaled)[:, 0], atol=1e-4, rtol=0)


def test_group_norm_groups_span_several_channels():
    """C = 64 with 32 groups (two channels per group, unlike the C = 32 fixture where groups are channels):
    statistics per frame and per group over (C / groups) x H x W, eps 1e-6, then the affine."""
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(64, 3).eval()
    assert block.norm.num_groups == 32 and block.norm.eps == 1e-6
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    clip = seeded_randn((2, 3, 64, 4, 5), 0) * torch.linspace(0.5, 3.0, 64).view(1, 1, 64, 1, 1)
    grouped = clip.reshape(2, 3, 32, 2 * 4 * 5)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, unbiased=False, keepdim=True)
    expected = ((grouped - mean) / torch.sqrt(var + 1e-6)).reshape(clip.shape)
    expected = expected * block.norm.weight.view(1, 1, 64, 1, 1) + block.norm.bias.view(1, 1, 64, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(block.normalize(clip), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------- chunking


@given(height=sizes, width=sizes, chunk=st.integers(1, 200), seed=seeds)
def test_chunked_equals_unchunked(height, width, chunk, seed):
    q, k, v = _qkv(2, 3, 4, 5, height, width, seed)
    whole = gaussian_cross_frame_attention(q, k, v, 3.0, chunk_size=height * width)
    # float32 rounding only: the fused path's exp(L1 - L0) factor adds a few ulp (relative ~5e-7)
    chunked = gaussian_cross_frame_attention(q, k, v, 3.0, chunk_size=chunk)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_chunked_gradients_equal_unchunked(checkpoint):
    q, k, v = _qkv(2, 3, 4, 5, 6, 7, 11)
    sigma = torch.tensor([2.0])
    grads = []
    for chunk in (42, 5, 1):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, sigma)]
        out = gaussian_cross_frame_attention(*leaves, chunk_size=chunk, checkpoint=checkpoint)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append([x.grad for x in leaves])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gradcheck_chunked_float64():
    q, k, v = _qkv(1, 2, 3, 2, 3, 4, 5, dtype=torch.float64)
    sigma = torch.tensor([1.5], dtype=torch.float64)
    leaves = [x.requires_grad_(True) for x in (q, k, v, sigma)]
    fn = lambda *a: gaussian_cross_frame_attention(*a, chunk_size=5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


def test_default_chunk_size_bounds_the_working_set():
    for b, t, n in [(1, 7, 64 * 112), (1, 7, 180 * 320), (4, 7, 64 * 64), (1, 1, 5)]:
        chunk = default_chunk_size(b, t, n)
        assert 1 <= chunk <= n
        assert chunk == n or chunk * (3 * b * t * n * 4 + 8 * n) <= DEFAULT_CHUNK_BYTES <= 64 * 2**20


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


@pytest.mark.parametrize("window", [None, 2.0])
def test_never_builds_more_than_one_chunk_forward_and_backward(window):
    """At 16x24 (N = 384) with chunks of 16 queries: no tensor reaches one frame's N x N, in forward or backward."""
    b, t, c, h, w = 1, 3, 4, 16, 24
    n, chunk = h * w, 16
    leaves = [x.requires_grad_(True) for x in _qkv(b, t, c, c, h, w, 3)]
    sigma = torch.tensor([2.0], requires_grad=True)
    with _LargestTensor() as probe:
        out = gaussian_cross_frame_attention(*leaves, sigma, chunk_size=chunk, window_radius=window)
        out.sum().backward()
    assert probe.largest <= b * t * chunk * n < n * n
    assert torch.isfinite(sigma.grad).all()


# ------------------------------------------------------------------------------------------------------ fused path


def _chunked_path(q, k, v, sigma, **kwargs):
    """The plain chunked path: autograd on and ``checkpoint=False`` never takes the fused kernel."""
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
    return gaussian_cross_frame_attention(*leaves, sigma, checkpoint=False, **kwargs).detach()


@pytest.mark.parametrize("window", [None, 1.5, 3.0])
@pytest.mark.parametrize("channels", [(4, 4), (3, 6), (6, 2)])
def test_fused_forward_equals_chunked_path(window, channels):
    """exp(L1 - L0) * softmax(s + log G) @ v through the flash kernel, windowed and with unequal widths."""
    q, k, v = _qkv(2, 3, channels[0], channels[1], 7, 9, 21)
    q = q * 3  # peaked softmax: L0 and L1 far apart
    expected = _chunked_path(q, k, v, 2.0, chunk_size=10, window_radius=window)
    for chunk in (None, 10, 63):
        with torch.no_grad():
            fused = gaussian_cross_frame_attention(q, k, v, 2.0, chunk_size=chunk, window_radius=window)
        torch.testing.assert_close(fused, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 2.0])
def test_fused_gradients_equal_chunked_path_sigma_included(window):
    q, k, v = _qkv(1, 3, 4, 5, 6, 8, 13)
    weights = None
    grads = {}
    for checkpoint in (True, False):  # True: fused forward + chunked recompute; False: plain chunked autograd
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, torch.tensor([1.7]))]
        out = gaussian_cross_frame_attention(*leaves, chunk_size=7, window_radius=window, checkpoint=checkpoint)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape) if weights is None else weights
        (out * weights).sum().backward()
        grads[checkpoint] = [x.grad for x in leaves]
    for fused, plain in zip(grads[True], grads[False]):
        assert fused is not None and fused.abs().sum() > 0
        torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


def test_gradcheck_fused_float64():
    q, k, v = _qkv(1, 2, 3, 3, 3, 4, 5, dtype=torch.float64)
    sigma = torch.tensor([1.5], dtype=torch.float64)
    leaves = [x.requires_grad_(True) for x in (q, k, v, sigma)]
    fn = lambda *a: gaussian_cross_frame_attention(*a, chunk_size=5, window_radius=2.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_empty_batch_gives_empty_output(checkpoint):
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, zero_init=False, checkpoint=checkpoint)
    clip = torch.randn(0, 3, 8, 5, 6, requires_grad=True)
    out = block(clip)
    assert out.shape == (0, 8, 5, 6)
    out.sum().backward()
    assert clip.grad.shape == clip.shape
    with torch.no_grad():
        assert block(clip).shape == (0, 8, 5, 6)


# ----------------------------------------------------------------------------------------------------- windowed


@given(height=sizes, width=sizes, seed=seeds, chunk=st.integers(1, 30))
def test_window_covering_the_frame_is_exact(height, width, seed, chunk):
    """Same maths, other summation order: equal to float32 rounding relative to the read-outs' size (a few ulps)."""
    q, k, v = _qkv(1, 2, 4, 3, height, width, seed)
    exact = gaussian_cross_frame_attention(q, k, v, 2.0)
    reach = math.hypot(height - 1, width - 1)
    torch.testing.assert_close(
        gaussian_cross_frame_attention(q, k, v, 2.0, chunk_size=chunk, window_radius=reach), exact, atol=1e-6, rtol=4e-6
    )
    torch.testing.assert_close(
        gaussian_cross_frame_attention(q, k, v, 2.0, chunk_size=chunk, window_sigmas=reach / 2.0 + 1e-3),
        exact,
        atol=1e-6,
        rtol=4e-6,
    )


@pytest.mark.parametrize("sigmas", [1.0, 2.0, 3.0, 4.0, 5.0])
def test_window_error_within_documented_bound(sigmas):
    q, k, v = _qkv(2, 3, 4, 3, 17, 23, 7)
    q, k = q * 0.3, k * 0.3  # a flat-ish softmax: most mass far away, the hardest case for the bound
    exact = gaussian_cross_frame_attention(q, k, v, 2.5)
    windowed = gaussian_cross_frame_attention(q, k, v, 2.5, window_sigmas=sigmas, chunk_size=37)
    vmax = v.abs().amax(dim=(3, 4)).reshape(2, -1, 1, 1)  # max over pixels, per (batch, frame, channel)
    bound = math.exp(-(sigmas**2) / 2) * vmax
    assert ((windowed - exact).abs() <= bound + 1e-6).all()


def test_window_error_shrinks_as_window_grows():
    q, k, v = _qkv(1, 3, 4, 3, 20, 20, 1)
    exact = gaussian_cross_frame_attention(q * 0.3, k * 0.3, v, 2.0)
    errors = [
        (gaussian_cross_frame_attention(q * 0.3, k * 0.3, v, 2.0, window_sigmas=s) - exact).abs().max().item()
        for s in (1, 2, 3, 4, 5, 6)
    ]
    assert all(a >= b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6 < errors[0]


def test_module_windowed_mode_official_weights():
    block, data = official_block(chunk_size=20, window_sigmas=6.0)
    with torch.no_grad():
        out = block.readout(data["intermediates"]["nonloc_in"])
    torch.testing.assert_close(out, data["intermediates"]["nonloc_corr_prob"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------- sigma limits


@given(height=sizes, width=sizes, seed=seeds)
def test_tiny_sigma_attends_only_to_own_pixel(height, width, seed):
    """sigma -> 0: G -> identity, so read_t[p] = P_t[p, p] * v_t[p], the value at the same pixel scaled by the
    softmax probability of that pixel's key (no renormalisation: not v_t[p] itself)."""
    b, t, c, cv = 2, 3, 4, 2
    q, k, v = _qkv(b, t, c, cv, height, width, seed)
    out = gaussian_cross_frame_attention(q, k, v, 0.05)
    n = height * width
    logits = torch.einsum("bcn,btcm->btnm", q.reshape(b, c, n), k.reshape(b, t, c, n))
    p_self = torch.softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1).reshape(b, t, 1, height, width)
    expected = (p_self * v).reshape(b, t * cv, height, width)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    if n > 1:  # rows sum to < 1: the read-out is smaller than the own value wherever other keys have mass
        assert (p_self < 1).any()


def test_huge_sigma_is_plain_unscaled_softmax_attention():
    q, k, v = _qkv(2, 3, 4, 5, 6, 7, 2)
    out = gaussian_cross_frame_attention(q, k, v, 1e6)
    qq = q.flatten(2).transpose(1, 2).unsqueeze(1).expand(-1, 3, -1, -1)
    kk = k.flatten(3).transpose(2, 3)
    vv = v.flatten(3).transpose(2, 3)
    ref = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, scale=1.0)
    torch.testing.assert_close(out, ref.transpose(2, 3).reshape(2, 15, 6, 7), atol=1e-5, rtol=0)


def test_sigma_is_learnable_and_named_std():
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, init_sigma=3.0, zero_init=False)
    assert isinstance(block.std, torch.nn.Parameter) and block.std.shape == (1,) and block.std.item() == 3.0
    assert block.sigma is block.std
    assert set(block.state_dict()) == {
        f"{m}.{p}" for m in ("norm", "g", "theta", "phi", "W_z") for p in ("weight", "bias")
    } | {"std"}
    block(torch.randn(1, 3, 8, 5, 5)).square().sum().backward()
    assert torch.isfinite(block.std.grad).all() and block.std.grad.abs().item() > 0


def test_zero_init_output_and_identity_residual():
    block = GaussianCrossFrameAttention(8, 3, num_groups=4)
    clip = torch.randn(2, 3, 8, 5, 6)
    assert torch.equal(block(clip), torch.zeros(2, 8, 5, 6))
    assert torch.equal(clip[:, 1] + block(clip), clip[:, 1])


# ------------------------------------------------------------------------------------------- generic block checks


def test_batch_independent():
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, zero_init=False, chunk_size=7).eval()
    with torch.no_grad():
        assert_batch_independent(block, torch.randn(3, 3, 8, 6, 5))


def test_errors():
    block = GaussianCrossFrameAttention(8, 3, num_groups=4)
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\)"):
        block(torch.randn(3, 8, 5, 5))
    with pytest.raises(ValueError, match="C=8"):
        block(torch.randn(1, 3, 4, 5, 5))
    with pytest.raises(ValueError, match="T=3"):
        block(torch.randn(1, 5, 8, 5, 5))
    with pytest.raises(ValueError, match="num_groups"):
        GaussianCrossFrameAttention(8, 3, num_groups=3)
    with pytest.raises(ValueError, match="chunk_size"):
        GaussianCrossFrameAttention(8, 3, num_groups=4, chunk_size=0)
    with pytest.raises(ValueError, match="at most one"):
        GaussianCrossFrameAttention(8, 3, num_groups=4, window_sigmas=3, window_radius=4)
    with pytest.raises(ValueError, match="center_index"):
        GaussianCrossFrameAttention(8, 3, num_groups=4, center_index=3)
    q, k, v = _qkv(1, 2, 4, 3, 5, 5, 0)
    with pytest.raises(ValueError, match="query"):
        gaussian_cross_frame_attention(q[:, :3], k, v, 1.0)
    with pytest.raises(ValueError, match="values"):
        gaussian_cross_frame_attention(q, k, v[:, :1], 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_cross_frame_attention(q, k, v, 0.0)


def test_compiles():
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, zero_init=False, chunk_size=18).eval()
    assert_compiles(block, torch.randn(2, 3, 8, 5, 7))


def test_compiles_windowed_radius_with_backward():
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, zero_init=False, chunk_size=21, window_radius=3.0)
    clip = torch.randn(1, 3, 8, 6, 7, requires_grad=True)
    assert_compiles(block, clip)
    torch._dynamo.reset()
    torch.compile(block, backend="aot_eager")(clip).sum().backward()
    assert torch.isfinite(clip.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("window", [None, 2.0])
def test_half_precision_finite_and_close(dtype, window):
    torch.manual_seed(0)
    block = GaussianCrossFrameAttention(8, 3, num_groups=4, zero_init=False, chunk_size=9, window_radius=window)
    clip = torch.randn(2, 3, 8, 7, 6)
    with torch.no_grad():
        ref = block.eval()(clip)
        out = assert_half_precision_finite(block, clip, dtype=dtype)
    assert out.shape == (2, 8, 7, 6)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_extra_repr_shows_hyper_parameters():
    text = repr(GaussianCrossFrameAttention(8, 5, inter_channels=6, num_groups=4, chunk_size=17, window_radius=3.0))
    for part in (
        "channels=8",
        "num_frames=5",
        "inter_channels=6",
        "num_groups=4",
        "center_index=2",
        "chunk_size=17",
        "window_radius=3.0",
    ):
        assert part in text


def test_fused_backward_is_exact_for_tiny_output_gradients():
    """Training gradients are tiny; the fused backward rescales them by a power of two, so gradients of a loss
    scaled by 2^-100 are exactly 2^-100 times the unscaled ones (no underflow, no subnormal products)."""
    q, k, v = _qkv(1, 3, 4, 5, 6, 8, 13)
    grads = []
    for scale in (1.0, 2.0**-100):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, torch.tensor([1.7]))]
        out = gaussian_cross_frame_attention(*leaves, chunk_size=7)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape) * scale).sum().backward()
        grads.append([x.grad for x in leaves])
    for plain, tiny in zip(*grads):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(tiny * 2.0**100, plain, atol=0, rtol=0)
