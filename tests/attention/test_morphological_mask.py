"""Morphology on masks: lattice properties, duality, binary in -> binary out, agreement with scikit-image
and with PASSRnet's ``morphologic_process`` run per sample."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_compiles
from tests.strategies import seeded_rand, seeds
from vsrblocks.attention import (
    MorphologicalMask,
    closing,
    dilate,
    erode,
    make_footprint,
    morphological_gradient,
    opening,
    remove_small_holes,
    remove_small_objects,
)

footprints = st.sampled_from(["square", "disk"])
kernels = st.sampled_from([1, 3, 5, 7])
mask_sizes = st.integers(min_value=1, max_value=17)


@st.composite
def binary_masks(draw, channels=1):
    shape = (draw(st.integers(1, 3)), channels, draw(mask_sizes), draw(mask_sizes))
    density = draw(st.sampled_from([0.2, 0.5, 0.8]))
    return (seeded_rand(shape, draw(seeds)) < density).float()


@st.composite
def grey_masks(draw):
    shape = (draw(st.integers(1, 2)), 1, draw(mask_sizes), draw(mask_sizes))
    return seeded_rand(shape, draw(seeds)) * 4 - 2


def test_footprints():
    assert make_footprint(5, "square").all()
    from skimage.morphology import disk

    for k in (1, 3, 5, 7, 9):
        np.testing.assert_array_equal(make_footprint(k, "disk").numpy(), disk(k // 2).astype(bool))


@given(x=grey_masks(), k=kernels, fp=footprints)
def test_lattice_properties(x, k, fp):
    d, e = dilate(x, k, fp), erode(x, k, fp)
    assert (d >= x).all() and (e <= x).all()  # extensive / anti-extensive
    torch.testing.assert_close(e, -dilate(-x, k, fp), rtol=0, atol=0)  # duality
    torch.testing.assert_close(d, -erode(-x, k, fp), rtol=0, atol=0)
    o, c = opening(x, k, fp), closing(x, k, fp)
    assert (o <= x).all() and (c >= x).all()
    torch.testing.assert_close(opening(o, k, fp), o, rtol=0, atol=0)  # idempotent
    torch.testing.assert_close(closing(c, k, fp), c, rtol=0, atol=0)
    torch.testing.assert_close(morphological_gradient(x, k, fp), d - e)
    assert (morphological_gradient(x, k, fp) >= 0).all()


@given(x=grey_masks(), k=kernels, fp=footprints)
def test_monotone_and_translation_equivariant_inside(x, k, fp):
    y = x + seeded_rand(x.shape, 1)
    assert (dilate(y, k, fp) >= dilate(x, k, fp)).all()
    assert (erode(y, k, fp) >= erode(x, k, fp)).all()
    # flips commute (symmetric footprints, symmetric border handling)
    torch.testing.assert_close(dilate(x.flip(-1), k, fp), dilate(x, k, fp).flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(erode(x.transpose(-1, -2), k, fp), erode(x, k, fp).transpose(-1, -2), rtol=0, atol=0)


@given(x=binary_masks(), k=kernels, fp=footprints, op=st.sampled_from(["dilate", "erode", "open", "close"]))
def test_binary_stays_binary_and_bool_stays_bool(x, k, fp, op):
    module = MorphologicalMask(k, op, fp)
    out = module(x)
    assert out.dtype == x.dtype and ((out == 0) | (out == 1)).all()
    out_bool = module(x.bool())
    assert out_bool.dtype == torch.bool
    assert torch.equal(out_bool.float(), out)


@given(
    x=binary_masks(),
    k=kernels,
    fp=footprints,
    padding=st.sampled_from([0, 2]),
    op=st.sampled_from(["dilate", "erode", "open", "close", "gradient"]),
)
def test_matches_skimage_binary(x, k, fp, padding, op):
    ours = MorphologicalMask(k, op, fp, padding=padding)(x)
    reference = MorphologicalMask(k, op, fp, padding=padding, backend="skimage")(x)
    assert torch.equal(ours, reference)


@given(x=grey_masks(), k=kernels, fp=footprints, op=st.sampled_from(["dilate", "erode", "open", "close", "gradient"]))
def test_matches_skimage_grey(x, k, fp, op):
    torch.testing.assert_close(MorphologicalMask(k, op, fp)(x), MorphologicalMask(k, op, fp, backend="skimage")(x))


@given(x=binary_masks(), size=st.sampled_from([2, 3, 5, 20]), connectivity=st.sampled_from([1, 2]))
def test_size_filters_match_skimage(x, size, connectivity):
    from skimage import morphology

    objects = remove_small_objects(x, size, connectivity)
    holes = remove_small_holes(x, size, connectivity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for i in range(x.shape[0]):
            m = x[i, 0].numpy().astype(bool)
            expected = morphology.remove_small_objects(m, max_size=size - 1, connectivity=connectivity)
            np.testing.assert_array_equal(objects[i, 0].numpy().astype(bool), expected)
            expected = morphology.remove_small_holes(m, max_size=size - 1, connectivity=connectivity)
            np.testing.assert_array_equal(holes[i, 0].numpy().astype(bool), expected)
    assert (objects <= x).all() and (holes >= x).all()


def test_components_of_long_winding_shapes():
    """A serpentine of 1 px wide rows: one 8-connected component of a few thousand pixels."""
    snake = torch.zeros(1, 1, 61, 61)
    snake[0, 0, ::4] = 1
    for i, row in enumerate(range(0, 57, 4)):
        snake[0, 0, row : row + 4, 60 if i % 2 == 0 else 0] = 1
    total = int(snake.sum())
    assert torch.equal(remove_small_objects(snake, total), snake)
    assert remove_small_objects(snake, total + 1).sum() == 0


@given(x=binary_masks(channels=2), op=st.sampled_from(["dilate", "erode", "open", "close", "gradient"]))
def test_module_is_per_sample_and_per_channel(x, op):
    """Batch samples and channels are processed independently (the size filters and the padding too)."""
    for module in (MorphologicalMask.passrnet(), MorphologicalMask(5, op, "disk", padding=1)):
        whole = module(x)
        assert whole.shape == x.shape and whole.dtype == x.dtype
        for i in range(x.shape[0]):
            for c in range(x.shape[1]):
                assert torch.equal(whole[i : i + 1, c : c + 1], module(x[i : i + 1, c : c + 1]))


def test_components_do_not_cross_samples():
    """PASSRnet labels the whole 4-D batch, so blobs of neighbouring samples merge; here they do not."""
    x = torch.zeros(2, 1, 6, 6)
    x[0, 0, 5, :3] = 1  # 3 px at the bottom of sample 0
    x[1, 0, 0, :3] = 1  # 3 px at the top of sample 1
    assert remove_small_objects(x, 4).sum() == 0
    for i in range(2):
        assert torch.equal(remove_small_objects(x, 4)[i : i + 1], remove_small_objects(x[i : i + 1], 4))


def _smaller_than(function, mask: np.ndarray, size: int) -> np.ndarray:
    """``function(mask, size, 2)`` with the meaning it had for PASSRnet (scikit-image < 0.26: remove what is
    *smaller than* ``size``). scikit-image 0.26 maps that positional argument onto the new inclusive
    ``max_size``, which would also remove components of exactly ``size`` pixels."""
    import inspect

    if "max_size" in inspect.signature(function).parameters:
        return function(mask, max_size=size - 1, connectivity=2)
    return function(mask, size, 2)


def _official_morphologic_process(mask: torch.Tensor) -> torch.Tensor:
    """PASSRnet ``models.py::morphologic_process``, transcribed, but called one sample at a time."""
    from skimage import morphology

    b = mask.shape[0]
    mask = 1 - mask
    mask_np = mask.cpu().numpy().astype(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mask_np = _smaller_than(morphology.remove_small_objects, mask_np, 20)
        mask_np = _smaller_than(morphology.remove_small_holes, mask_np, 10)
        for idx in range(b):
            buffer = np.pad(mask_np[idx, 0, :, :], ((3, 3), (3, 3)), "constant")
            buffer = morphology.binary_closing(buffer, morphology.disk(3))
            mask_np[idx, 0, :, :] = buffer[3:-3, 3:-3]
    mask_np = 1 - mask_np
    return torch.from_numpy(mask_np.astype(float)).float()


@given(seed=seeds, density=st.sampled_from([0.05, 0.2, 0.5, 0.8]), height=st.integers(4, 24), width=st.integers(4, 24))
def test_passrnet_cleanup_matches_official(seed, density, height, width):
    valid = (seeded_rand((1, 1, height, width), seed) > density).float()
    expected = _official_morphologic_process(valid)
    assert torch.equal(MorphologicalMask.passrnet()(valid), expected)
    assert torch.equal(MorphologicalMask.passrnet(backend="skimage")(valid), expected)


def test_passrnet_size_thresholds_are_exclusive():
    """Occluded blobs of exactly 20 px stay, 19 px go; enclosed valid holes of 10 px stay, 9 px are filled."""
    valid = torch.ones(1, 1, 30, 30)
    valid[0, 0, 2:6, 2:7] = 0  # 20 px occlusion: kept
    valid[0, 0, 10:14, 2:7] = 0
    valid[0, 0, 13, 6] = 1  # 19 px occlusion: removed
    cleaned = MorphologicalMask(kernel_size=1, operation="none", min_object_size=20, invert=True)(valid)
    assert cleaned[0, 0, 2:6, 2:7].sum() == 0 and cleaned[0, 0, 10:14, 2:7].sum() == 20
    occlusion = torch.ones(1, 1, 12, 12)
    occlusion[0, 0, 2:4, 2:7] = 0  # 10 px hole: kept
    occlusion[0, 0, 7:10, 2:5] = 0  # 9 px hole: filled
    filled = remove_small_holes(occlusion, 10)
    assert filled[0, 0, 2:4, 2:7].sum() == 0 and filled[0, 0, 7:10, 2:5].sum() == 9


def test_passrnet_cleanup_fills_specks_and_keeps_large_occlusions():
    valid = torch.ones(1, 1, 24, 24)
    valid[0, 0, 3, 3] = 0  # a 1 px occlusion: noise
    valid[0, 0, 10:18, 10:18] = 0  # an 8x8 occlusion: real
    cleaned = MorphologicalMask.passrnet()(valid)
    assert cleaned[0, 0, 3, 3] == 1
    assert (cleaned[0, 0, 10:18, 10:18] == 0).all()
    assert cleaned.sum() == 24 * 24 - 64


def test_grey_gradients_flow():
    x = seeded_rand((1, 1, 6, 6), 0).requires_grad_()
    closing(x, 3, "disk").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    binary = (seeded_rand((2, 1, 12, 11), 0) > 0.4).float()
    cleaned = MorphologicalMask.passrnet()(binary.to(dtype))
    assert cleaned.dtype == dtype
    assert torch.equal(cleaned.float(), MorphologicalMask.passrnet()(binary))
    grey = seeded_rand((1, 1, 7, 9), 1)
    torch.testing.assert_close(closing(grey.to(dtype), 5, "disk").float(), closing(grey.to(dtype).float(), 5, "disk"))


def test_compile():
    x = (seeded_rand((2, 1, 9, 8), 0) > 0.5).float()
    assert_compiles(MorphologicalMask(5, "close", "disk"), x)


def test_repr_and_errors():
    assert "operation='close'" in repr(MorphologicalMask.passrnet())
    with pytest.raises(ValueError, match="odd"):
        MorphologicalMask(4)
    with pytest.raises(ValueError, match="operation"):
        MorphologicalMask(3, "thin")
    with pytest.raises(ValueError, match="footprint"):
        MorphologicalMask(3, footprint="diamond")
    with pytest.raises(ValueError, match="connectivity"):
        MorphologicalMask(3, connectivity=3)
    with pytest.raises(ValueError, match="backend"):
        MorphologicalMask(3, backend="opencv")
    with pytest.raises(ValueError, match="binary"):
        MorphologicalMask(3, min_object_size=4)(torch.rand(1, 1, 5, 5) * 0.5 + 0.25)
    with pytest.raises(ValueError, match="binary"):
        MorphologicalMask(3, min_hole_size=4, backend="skimage")(torch.rand(1, 1, 5, 5) * 0.5 + 0.25)
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        MorphologicalMask()(torch.rand(5, 5))
