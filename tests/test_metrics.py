import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from tests.strategies import batches, seeded_rand, seeds
from vsrblocks import psnr, ssim
from vsrblocks.metrics import rgb_to_y

image_sizes = st.integers(min_value=11, max_value=24)


def test_psnr_constant_offset_exact():
    """A constant error of 16/255 on the 0-255 scale: MSE = 16**2, PSNR = 10 log10(255**2 / 256)."""
    x = torch.full((2, 3, 12, 9), 0.25, dtype=torch.float64)
    got = psnr(x, x + 16 / 255)
    torch.testing.assert_close(got, torch.full((2,), 10 * math.log10(255**2 / 256), dtype=torch.float64))


def test_psnr_per_sample_and_max_value():
    ref = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    img = torch.stack([torch.full((1, 4, 4), v, dtype=torch.float64) for v in (0.1, 0.01, 0.0)])
    got = psnr(img, ref)
    torch.testing.assert_close(got[:2], torch.tensor([20.0, 40.0], dtype=torch.float64))
    assert got[2] == math.inf
    torch.testing.assert_close(psnr(img * 255, ref, max_value=255.0), got)


def test_psnr_single_image_returns_scalar():
    x = torch.rand(3, 8, 8)
    assert psnr(x, x).shape == () and psnr(x, x) == math.inf
    assert ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16)).shape == ()


@given(b=batches, h=image_sizes, w=image_sizes, seed=seeds)
def test_symmetric(b, h, w, seed):
    x, y = seeded_rand((b, 3, h, w), seed), seeded_rand((b, 3, h, w), seed + 1)
    torch.testing.assert_close(psnr(x, y), psnr(y, x))
    torch.testing.assert_close(ssim(x, y), ssim(y, x))


@given(b=batches, c=st.sampled_from([1, 3]), h=image_sizes, w=image_sizes, seed=seeds)
def test_ssim_range_and_identity(b, c, h, w, seed):
    x, y = seeded_rand((b, c, h, w), seed), seeded_rand((b, c, h, w), seed + 1)
    s = ssim(x, y)
    assert s.shape == (b,) and s.dtype == torch.float64
    assert ((s >= -1) & (s <= 1)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(b, dtype=torch.float64))


@given(c=st.sampled_from([1, 3]), h=image_sizes, w=image_sizes, seed=seeds, noise=st.sampled_from([0.02, 0.1, 0.5]))
def test_ssim_matches_skimage(c, h, w, seed, noise):
    """BasicSR's SSIM is scikit-image's with a Gaussian window (sigma 1.5, truncated to 11x11), population
    covariance and data range 255; its map is averaged over the valid region, which skimage's crop of
    (win_size - 1) / 2 pixels also gives."""
    x = seeded_rand((1, c, h, w), seed, torch.float64)
    y = (x + noise * (seeded_rand((1, c, h, w), seed + 1, torch.float64) - 0.5)).clamp(0, 1)
    expected = structural_similarity(
        x[0].permute(1, 2, 0).numpy() * 255,
        y[0].permute(1, 2, 0).numpy() * 255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2,
    )
    torch.testing.assert_close(ssim(x, y)[0].item(), float(expected), atol=1e-10, rtol=0)


def test_ssim_decreases_with_noise():
    x = seeded_rand((1, 3, 32, 32), 0)
    noise = seeded_rand((1, 3, 32, 32), 1) - 0.5
    values = [ssim(x, (x + a * noise).clamp(0, 1)).item() for a in (0.0, 0.05, 0.2, 0.6)]
    assert values == sorted(values, reverse=True) and values[0] == 1.0


def test_y_channel_coefficients():
    rgb = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb_to_y(rgb) * 255, torch.full((1, 1, 1, 1), 65.481 + 16, dtype=torch.float64))
    grey = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    torch.testing.assert_close(rgb_to_y(grey) * 255, torch.full((1, 1, 2, 2), 0.5 * 219 + 16, dtype=torch.float64))


def test_y_channel_psnr_equals_psnr_of_luma():
    x, y = seeded_rand((2, 3, 16, 16), 3, torch.float64), seeded_rand((2, 3, 16, 16), 4, torch.float64)
    torch.testing.assert_close(psnr(x, y, test_y_channel=True), psnr(rgb_to_y(x), rgb_to_y(y)))
    torch.testing.assert_close(ssim(x, y, test_y_channel=True), ssim(rgb_to_y(x), rgb_to_y(y)))
    grey = x[:, :1]
    torch.testing.assert_close(psnr(grey, y[:, :1], test_y_channel=True), psnr(grey, y[:, :1]))


def test_crop_border_ignores_the_border():
    x = seeded_rand((1, 3, 20, 20), 5)
    y = x.clone()
    y[..., :4, :] = 1 - y[..., :4, :]
    y[..., :, -4:] = 0
    assert psnr(x, y, crop_border=4) == math.inf
    assert psnr(x, y, crop_border=3) < 40
    torch.testing.assert_close(ssim(x, y, crop_border=4), torch.ones(1, dtype=torch.float64))


def test_quantize_matches_8bit_rounding():
    x = seeded_rand((1, 3, 16, 16), 6, torch.float64)
    y = seeded_rand((1, 3, 16, 16), 7, torch.float64)
    to8 = lambda t: (t.clamp(0, 1) * 255).round() / 255  # noqa: E731
    torch.testing.assert_close(psnr(x, y, quantize=True), psnr(to8(x), to8(y)))
    torch.testing.assert_close(ssim(x * 1.2, y, quantize=True), ssim(to8(x * 1.2), to8(y)))
    np_x = (x[0].permute(1, 2, 0).numpy() * 255).round()
    np_y = (y[0].permute(1, 2, 0).numpy() * 255).round()
    expected = 10 * np.log10(255.0**2 / np.mean((np_x - np_y) ** 2))
    assert psnr(x, y, quantize=True).item() == pytest.approx(expected, abs=1e-10)


def test_float32_and_half_inputs_are_scored_in_float64():
    x = seeded_rand((1, 3, 16, 16), 8)
    y = seeded_rand((1, 3, 16, 16), 9)
    assert psnr(x.half(), y.half()).dtype == torch.float64
    torch.testing.assert_close(ssim(x, y), ssim(x.double(), y.double()))


@pytest.mark.parametrize(
    "img, ref, kwargs, error, message",
    [
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), {}, ValueError, "same shape"),
        (torch.zeros(8, 8), torch.zeros(8, 8), {}, ValueError, r"img: expected \(B, C, H, W\)"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), {"crop_border": 4}, ValueError, "leaves nothing"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), {"crop_border": -1}, ValueError, ">= 0"),
        (torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), {"test_y_channel": True}, ValueError, "C=4"),
        (np.zeros((1, 3, 8, 8)), torch.zeros(1, 3, 8, 8), {}, TypeError, "torch.Tensor"),
    ],
)
def test_psnr_rejects_bad_input(img, ref, kwargs, error, message):
    with pytest.raises(error, match=message):
        psnr(img, ref, **kwargs)


def test_ssim_rejects_images_smaller_than_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 14, 14), torch.zeros(1, 3, 14, 14), crop_border=2)


def _reference_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The former implementation (BasicSR's ``calculate_ssim_pt``): a 2-D 11x11 float64 convolution."""
    x, y = x.double() * 255, y.double() * 255
    coords = torch.arange(11, dtype=torch.float64) - 5
    k = torch.exp(-(coords**2) / (2 * 1.5**2))
    k = k / k.sum()
    channels = x.shape[1]
    window = torch.outer(k, k).expand(channels, 1, 11, 11)

    def blur(t):
        return torch.nn.functional.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("noise", [0.01, 0.3])
def test_separable_ssim_equals_the_2d_float64_reference(y_channel, noise):
    """8-bit frames, as an evaluation scores them: within 1e-7 of the 2-D convolution (in fact ~1e-15)."""
    x = (seeded_rand((2, 3, 72, 96), 10, torch.float64) * 255).round() / 255
    y = ((x + noise * (seeded_rand((2, 3, 72, 96), 11, torch.float64) - 0.5)).clamp(0, 1) * 255).round() / 255
    expected = _reference_ssim(rgb_to_y(x), rgb_to_y(y)) if y_channel else _reference_ssim(x, y)
    torch.testing.assert_close(ssim(x, y, test_y_channel=y_channel), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(ssim(x, y, test_y_channel=y_channel), expected, atol=1e-12, rtol=0)


def test_ssim_is_differentiable():
    x = seeded_rand((1, 1, 12, 13), 12, torch.float64).requires_grad_()
    y = seeded_rand((1, 1, 12, 13), 13, torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y), (x,))
