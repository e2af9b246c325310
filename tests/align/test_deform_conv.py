"""DeformConv2d: pure-PyTorch backend == torchvision, == conv2d at zero offsets, DCN-pack init, layout."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import vsrblocks.align.deform_conv as deform_conv_module
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import seeded_rand, seeded_randn, seeds
from vsrblocks.align import DeformConv2d, deform_conv2d
from vsrblocks.align.deform_conv import torchvision_available

needs_torchvision = pytest.mark.skipif(not torchvision_available(), reason="torchvision deform_conv2d not available")

# (in, out, groups, deform_groups, stride, padding, dilation, kernel, H, W)
CONFIGS = [
    (8, 8, 1, 1, 1, 1, 1, (3, 3), 7, 9),
    (8, 12, 2, 4, 1, 1, 1, (3, 3), 6, 5),
    (8, 8, 4, 8, 2, 1, 1, (3, 3), 9, 9),
    (6, 4, 2, 3, 1, 2, 2, (3, 3), 8, 7),
    (4, 4, 1, 2, 2, 0, 1, (3, 2), 3, 5),
    (4, 6, 1, 1, 1, 0, 1, (1, 1), 5, 5),
    (4, 4, 1, 1, 1, 1, 1, (3, 3), 1, 1),
]


def _case(config, seed, dtype=torch.float64, scale=3.0):
    cin, cout, groups, dgroups, stride, padding, dilation, (kh, kw), h, w = config
    out_h = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x = seeded_randn((2, cin, h, w), seed, dtype)
    weight = seeded_randn((cout, cin // groups, kh, kw), seed + 1, dtype)
    bias = seeded_randn((cout,), seed + 2, dtype)
    offset = scale * seeded_randn((2, 2 * dgroups * kh * kw, out_h, out_w), seed + 3, dtype)
    mask = seeded_rand((2, dgroups * kh * kw, out_h, out_w), seed + 4, dtype)
    return x, offset, weight, bias, mask, dict(stride=stride, padding=padding, dilation=dilation)


def _reference_loop(x, offset, weight, bias, mask, stride, padding, dilation):
    """Direct per-tap definition of the documented layout: bilinear reads, zeros outside."""
    b, cin, h, w = x.shape
    cout, cpg, kh, kw = weight.shape
    groups, taps = cin // cpg, kh * kw
    out_h, out_w = offset.shape[-2:]
    dgroups = offset.shape[1] // (2 * taps)
    padded = F.pad(x, (1, 1, 1, 1))  # one ring of zeros: every bilinear corner index is then in range

    def read(n, yy, xx):
        y0, x0 = yy.floor(), xx.floor()
        out = 0
        for dy, wy in ((0, 1 - (yy - y0)), (1, yy - y0)):
            for dx, wx in ((0, 1 - (xx - x0)), (1, xx - x0)):
                iy, ix = (y0 + dy).long(), (x0 + dx).long()
                inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                iy, ix = iy.clamp(-1, h) + 1, ix.clamp(-1, w) + 1
                val = padded[n][:, iy, ix] * inside
                out = out + val * wy * wx
        return out

    cols = x.new_zeros(b, cin, taps, out_h, out_w)
    oy = torch.arange(out_h, dtype=x.dtype)[:, None] * stride - padding
    ox = torch.arange(out_w, dtype=x.dtype)[None, :] * stride - padding
    for n in range(b):
        for g in range(dgroups):
            for k in range(taps):
                i, j = divmod(k, kw)
                yy = oy + i * dilation + offset[n, 2 * (g * taps + k)]
                xx = ox + j * dilation + offset[n, 2 * (g * taps + k) + 1]
                chans = slice(g * cin // dgroups, (g + 1) * cin // dgroups)
                cols[n, chans, k] = read(n, yy, xx)[chans] * mask[n, g * taps + k]
    cols = cols.reshape(b, groups, cpg * taps, out_h * out_w)
    wmat = weight.reshape(groups, cout // groups, cpg * taps)
    out = torch.einsum("gok,bgkl->bgol", wmat, cols).reshape(b, cout, out_h, out_w)
    return out + bias[None, :, None, None]


@pytest.mark.parametrize("config", CONFIGS[:5])
def test_torch_backend_matches_documented_definition(config):
    x, offset, weight, bias, mask, kw = _case(config, seed=3)
    expected = _reference_loop(x, offset, weight, bias, mask, **kw)
    got = deform_conv2d(x, offset, weight, bias, mask=mask, backend="torch", **kw)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@needs_torchvision
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_backend_matches_torchvision(config, dtype):
    x, offset, weight, bias, mask, kw = _case(config, seed=11, dtype=dtype)
    fallback = deform_conv2d(x, offset, weight, bias, mask=mask, backend="torch", **kw)
    reference = deform_conv2d(x, offset, weight, bias, mask=mask, backend="torchvision", **kw)
    assert (fallback - reference).abs().max() < 1e-4


@needs_torchvision
@given(seed=seeds, scale=st.sampled_from([0.5, 2.0, 6.0]))
def test_torch_backend_gradients_match_torchvision(seed, scale):
    config = CONFIGS[1]
    inputs = _case(config, seed=seed, scale=scale)
    kw = inputs[-1]
    grads = {}
    for backend in ("torch", "torchvision"):
        leaves = [t.clone().requires_grad_() for t in inputs[:5]]
        x, offset, weight, bias, mask = leaves
        out = deform_conv2d(x, offset, weight, bias, mask=mask, backend=backend, **kw)
        (out * seeded_randn(out.shape, seed + 9, out.dtype)).sum().backward()
        grads[backend] = [t.grad for t in leaves]
    for name, a, b in zip(("x", "offset", "weight", "bias", "mask"), grads["torch"], grads["torchvision"]):
        # Bilinear interpolation is not differentiable where a sample lands on an integer position;
        # random offsets never do, so both backends agree.
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-7, msg=name)


@pytest.mark.parametrize("backend", ["torch", pytest.param("torchvision", marks=needs_torchvision)])
@pytest.mark.parametrize("config", CONFIGS)
def test_zero_offset_unit_mask_is_conv2d(config, backend):
    x, offset, weight, bias, mask, kw = _case(config, seed=5)
    groups = x.shape[1] // weight.shape[1]
    out = deform_conv2d(x, torch.zeros_like(offset), weight, bias, mask=torch.ones_like(mask), backend=backend, **kw)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, groups=groups, **kw), atol=1e-10, rtol=1e-10)
    no_mask = deform_conv2d(x, torch.zeros_like(offset), weight, bias, backend=backend, **kw)
    torch.testing.assert_close(no_mask, out, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", ["torch", pytest.param("torchvision", marks=needs_torchvision)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(6, 7), (8, 16), (1, 13)])
def test_integer_offset_is_an_exact_shift(backend, dtype, size):
    """A 1x1 deformable conv with offset (dy, dx) = (1, -2) everywhere reads x[i + 1, j - 2] (zeros outside),
    bit for bit: integer positions are never rounded, whether or not the size is a power of two."""
    x = seeded_randn((1, 2, *size), 0, dtype)
    weight = torch.eye(2, dtype=dtype)[:, :, None, None]
    offset = torch.zeros(1, 2, *size, dtype=dtype)
    offset[:, 0], offset[:, 1] = 1.0, -2.0
    out = deform_conv2d(x, offset, weight, backend=backend)
    expected = torch.zeros_like(x)
    expected[:, :, :-1, 2:] = x[:, :, 1:, :-2]
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_auto_backend_is_pure_torch_off_cuda(monkeypatch):
    """``"auto"`` runs the grid_sample formulation on the CPU (faster there: ``benchmarks/align.py``) and
    keeps torchvision's kernel for CUDA tensors."""
    import torchvision.ops

    import vsrblocks.align.deform_conv as module

    def not_on_cpu(*args, **kwargs):
        raise AssertionError("torchvision.ops.deform_conv2d must not be called for CPU tensors")

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", not_on_cpu)
    x, offset, weight, bias, mask, kw = _case(CONFIGS[1], seed=4)
    expected = deform_conv2d(x, offset, weight, bias, mask=mask, backend="torch", **kw)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kw), expected, atol=0, rtol=0)
    cuda = torch.device("cuda")
    assert module._resolve_backend("auto", cuda) == ("torchvision" if torchvision_available() else "torch")
    assert module._resolve_backend("torch", cuda) == "torch"


def test_module_starts_as_half_masked_conv():
    """conv_offset is zero-initialised: offsets 0 and mask sigmoid(0) = 0.5, whatever the guide."""
    torch.manual_seed(0)
    dcn = DeformConv2d(8, 6, deform_groups=4, guide_channels=5, backend="torch")
    nn_bias = torch.randn(6)
    with torch.no_grad():
        dcn.bias.copy_(nn_bias)
    x, guide = seeded_randn((2, 8, 7, 6), 1), seeded_randn((2, 5, 7, 6), 2)
    offset, mask = dcn.offset_and_mask(guide)
    assert offset.shape == (2, 2 * 4 * 9, 7, 6) and mask.shape == (2, 4 * 9, 7, 6)
    assert torch.all(offset == 0) and torch.all(mask == 0.5)
    expected = 0.5 * F.conv2d(x, dcn.weight, padding=1) + nn_bias[None, :, None, None]
    torch.testing.assert_close(dcn(x, guide), expected, atol=1e-5, rtol=1e-5)


def test_guide_drives_offsets_in_torchvision_layout():
    """``cat(o1, o2)`` of the offset conv feeds the layout of :func:`deform_conv2d` unchanged, and the
    last third is the mask logits: setting the offset-conv bias reproduces the functional call."""
    dcn = DeformConv2d(4, 4, deform_groups=2, backend="torch")
    bias = seeded_randn((3 * 2 * 9,), 0)
    with torch.no_grad():
        dcn.conv_offset.bias.copy_(bias)
    x = seeded_randn((1, 4, 5, 6), 1)
    offset = bias[: 2 * 18][None, :, None, None].expand(1, 36, 5, 6)
    mask = torch.sigmoid(bias[2 * 18 :])[None, :, None, None].expand(1, 18, 5, 6)
    expected = deform_conv2d(x, offset, dcn.weight, dcn.bias, padding=1, mask=mask, backend="torch")
    torch.testing.assert_close(dcn(x, x), expected)
    torch.testing.assert_close(dcn(x), expected)


@given(
    batch=st.integers(1, 2),
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    stride=st.sampled_from([1, 2]),
    seed=seeds,
)
def test_module_shapes_any_size(batch, height, width, stride, seed):
    torch.manual_seed(seed)
    dcn = DeformConv2d(4, 6, stride=stride, deform_groups=2, guide_channels=3)
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.5)
    x, guide = seeded_randn((batch, 4, height, width), seed), seeded_randn((batch, 3, height, width), seed + 1)
    out = dcn(x, guide)
    conv_out = F.conv2d(x, dcn.weight, stride=stride, padding=1)
    assert out.shape == conv_out.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("torchvision", marks=needs_torchvision)])
def test_gradients_reach_every_parameter(backend):
    torch.manual_seed(0)
    dcn = DeformConv2d(4, 4, deform_groups=2, backend=backend)
    x = seeded_randn((2, 4, 6, 5), 0).requires_grad_()
    guide = seeded_randn((2, 4, 6, 5), 1).requires_grad_()
    dcn(x, guide).square().sum().backward()
    for name, param in dcn.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # even at the zero init, the offset conv gets a gradient through the mask and the offsets
        assert param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert guide.grad is not None  # zero at init: the offset conv's weight is zero


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", pytest.param("torchvision", marks=needs_torchvision)])
def test_half_precision_runs_and_is_close(backend, dtype):
    torch.manual_seed(0)
    dcn = DeformConv2d(8, 8, deform_groups=4, backend=backend)
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.1)
    x = seeded_randn((1, 8, 9, 7), 0)
    reference = dcn(x)
    out = assert_half_precision_finite(dcn, x, dtype=dtype)
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_batch_independent():
    torch.manual_seed(0)
    dcn = DeformConv2d(4, 4, deform_groups=2, backend="torch")
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.3)
    assert_batch_independent(dcn, seeded_randn((3, 4, 6, 7), 0), seeded_randn((3, 4, 6, 7), 1))


@pytest.mark.parametrize("backend", ["torch", pytest.param("torchvision", marks=needs_torchvision)])
def test_compiles(backend):
    torch.manual_seed(0)
    dcn = DeformConv2d(4, 4, deform_groups=2, backend=backend).eval()
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.3)
    assert_compiles(dcn, seeded_randn((1, 4, 6, 7), 0), seeded_randn((1, 4, 6, 7), 1))


def test_compiled_torch_backend_follows_size_changes():
    """The power-of-two padding is worked out from the input size: a compiled module that meets new sizes
    (Dynamo then recompiles with symbolic sizes) still gives the eager result at each."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    dcn = DeformConv2d(4, 4, deform_groups=2, backend="torch").eval()
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.3)
    compiled = torch.compile(dcn, backend="aot_eager")
    with torch.no_grad():
        for seed, size in enumerate([(9, 11), (13, 7), (16, 16), (20, 5)]):
            x = seeded_randn((1, 4, *size), seed)
            torch.testing.assert_close(compiled(x), dcn(x), atol=1e-6, rtol=1e-5)


def test_large_offsets_warn_in_training(caplog):
    dcn = DeformConv2d(2, 2, deform_groups=1, max_offset_warn=5.0, backend="torch")
    with torch.no_grad():
        dcn.conv_offset.bias[:36].fill_(10.0)
    x = torch.randn(1, 2, 4, 4)
    with caplog.at_level(logging.WARNING, logger="vsrblocks.align.deform_conv"):
        dcn.eval()(x)
        assert not caplog.records
        dcn.train()(x)
    assert any("exceeds" in record.getMessage() for record in caplog.records)


def test_auto_falls_back_to_pure_torch_without_torchvision(monkeypatch):
    """Without torchvision's compiled operator, ``"auto"`` runs the pure-PyTorch backend (same numbers,
    torchvision never called) and an explicit ``"torchvision"`` fails with a clear error."""
    import torchvision.ops

    import vsrblocks.align.deform_conv as module

    x, offset, weight, bias, mask, kw = _case(CONFIGS[1], seed=2)
    expected = deform_conv2d(x, offset, weight, bias, mask=mask, backend="torch", **kw)
    monkeypatch.setattr(module, "_torchvision_ok", False)

    def unavailable(*args, **kwargs):
        raise AssertionError("torchvision.ops.deform_conv2d must not be called")

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", unavailable)
    assert not module.torchvision_available()
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, backend="auto", **kw), expected)
    torch.manual_seed(0)
    dcn = DeformConv2d(4, 4, deform_groups=2)
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.3)
    assert dcn(seeded_randn((1, 4, 5, 6), 0)).shape == (1, 4, 5, 6)
    with pytest.raises(RuntimeError, match="torchvision"):
        deform_conv2d(x, offset, weight, bias, mask=mask, backend="torchvision", **kw)
    with pytest.raises(RuntimeError, match="torchvision"):
        DeformConv2d(4, 4, deform_groups=2, backend="torchvision")


def test_shape_errors():
    dcn = DeformConv2d(4, 4, deform_groups=2, guide_channels=3)
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\) with C=4"):
        dcn(torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="guide"):
        dcn(torch.randn(1, 4, 5, 5), torch.randn(1, 3, 5, 6))
    with pytest.raises(ValueError, match="guide"):
        dcn(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="deform_groups"):
        DeformConv2d(6, 6, deform_groups=4)
    with pytest.raises(ValueError, match="groups"):
        DeformConv2d(6, 5, groups=2, deform_groups=1)
    with pytest.raises(ValueError, match="backend"):
        DeformConv2d(4, 4, deform_groups=1, backend="cuda")
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 17, 5, 5), weight, padding=1)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 18, 4, 5), weight, padding=1)
    with pytest.raises(ValueError, match="mask"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), weight, padding=1, mask=torch.ones(1, 18, 5, 5))
    with pytest.raises(ValueError, match="smaller than"):
        deform_conv2d(torch.randn(1, 4, 2, 2), torch.zeros(1, 18, 1, 1), weight)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3]])
@pytest.mark.parametrize("grad", [False, True])
def test_large_batches_run_in_chunks_with_the_same_result(monkeypatch, config, grad):
    """Chunks of whole samples (the buffer budget shrunk to one sample of a batch of 3) equal the one-shot
    computation bit for bit in inference (mask and bias applied in place); with gradients, the weight and bias
    gradients sum the chunks in another order, so that case runs in float64."""
    x, offset, weight, bias, mask, kw = _case(config, seed=5, dtype=torch.float64 if grad else torch.float32)
    x, offset, mask = (torch.cat((t, t[:1] * 0.5)) for t in (x, offset, mask))  # batch of 3
    inputs = [t.clone().requires_grad_(grad) for t in (x, offset, weight, bias, mask)]

    def run():
        tensors = [t.detach().clone().requires_grad_(grad) for t in inputs]
        with torch.set_grad_enabled(grad):
            out = deform_conv2d(tensors[0], tensors[1], tensors[2], tensors[3], mask=tensors[4], backend="torch", **kw)
            if not grad:
                return out, []
            out.square().sum().backward()
            return out, [t.grad for t in tensors]

    whole, whole_grads = run()
    calls = []
    real = deform_conv_module.F.grid_sample

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(deform_conv_module.F, "grid_sample", counting)
    per_sample = x.shape[1] * weight.shape[2] * weight.shape[3] * offset.shape[2] * offset.shape[3] * 4
    monkeypatch.setattr(deform_conv_module, "SAMPLES_CHUNK_BYTES", per_sample)
    chunked, chunked_grads = run()
    groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    assert calls == [groups] * 3  # one sample per call
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    for a, b in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
