"""PSNR and SSIM with BasicSR's conventions (``crop_border``, ``test_y_channel``), per sample.

What we match, from ``basicsr/metrics/psnr_ssim.py`` and ``basicsr/utils/color_util.py``:

- Y channel: ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` (BasicSR ``rgb2ycbcr_pt(img, y_only=True)``),
  ``Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255`` for RGB in [0, 1], so Y lies in [16, 235] / 255.
  The Y channel is not rounded (BasicSR's ``to_y_channel`` does not round either). A single-channel
  image is taken as Y already, as BasicSR does.
- ``crop_border`` pixels are removed on every side before the colour conversion.
- Everything is computed in float64.
- PSNR: ``10 log10(255**2 / MSE)`` on the 0-255 scale, i.e. ``10 log10(1 / MSE)`` on [0, 1]; the MSE is
  the mean over channels and pixels of each sample. Identical images give ``inf`` like BasicSR's numpy
  ``calculate_psnr`` (its PyTorch twin adds 1e-8 to the MSE instead; we do not).
- SSIM: images scaled to 0-255, ``C1 = (0.01 * 255)**2``, ``C2 = (0.03 * 255)**2``, an 11x11 Gaussian
  window with sigma 1.5 (``cv2.getGaussianKernel(11, 1.5)`` outer product), "valid" filtering (no
  padding: the map is ``(H - 10) x (W - 10)``), and the mean of the SSIM map over channels and pixels.
  This is BasicSR's ``calculate_ssim``/``calculate_ssim_pt`` and equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255)``.
- BasicSR's test scripts score images after ``tensor2img``, which clamps to [0, 1] and rounds to 8-bit
  before the metric. ``quantize=True`` does the same; the default (``False``) scores the float
  values, as BasicSR's ``*_pt`` functions do during validation.
"""

from __future__ import annotations

from typing import cast

import torch

from vsrblocks.shapes import check_shape

__all__ = ["psnr", "ssim", "rgb_to_y"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images in [0, 1]: ``(65.481 R + 128.553 G + 24.966 B + 16) / 255``.

    Shape:
        - Input: ``(B, 3, H, W)``
        - Output: ``(B, 1, H, W)``, values in [16/255, 235/255] for inputs in [0, 1]

    Examples:
        >>> rgb_to_y(torch.ones(1, 3, 1, 1, dtype=torch.float64)).item() * 255
        235.0
    """
    check_shape(img, "B C H W", name="img", C=3)
    weights = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return ((img * weights).sum(dim=1, keepdim=True) + 16.0) / 255.0


def _prepare(
    img: torch.Tensor, ref: torch.Tensor, crop_border: int, test_y_channel: bool, max_value: float, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both images as float64 ``(B, C, H, W)`` in [0, 1] units, cropped and converted; and whether the
    input was a single ``(C, H, W)`` image."""
    single = isinstance(img, torch.Tensor) and img.dim() == 3
    layout = "C H W" if single else "B C H W"
    check_shape(img, layout, name="img")
    check_shape(ref, layout, name="ref")
    if img.shape != ref.shape:
        raise ValueError(f"img {tuple(img.shape)} and ref {tuple(ref.shape)} must have the same shape")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if single:
        img, ref = img.unsqueeze(0), ref.unsqueeze(0)
    h, w = img.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
    out = []
    for x in (img, ref):
        x = x.to(torch.float64) / max_value
        if quantize:
            x = (x.clamp(0, 1) * 255.0).round() / 255.0
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        if test_y_channel:
            if x.shape[1] == 3:
                x = rgb_to_y(x)
            elif x.shape[1] != 1:
                raise ValueError(f"test_y_channel needs RGB (C=3) or single-channel images, got C={x.shape[1]}")
        out.append(x)
    return out[0], out[1], single


def psnr(
    img: torch.Tensor,
    ref: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    max_value: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per sample, with BasicSR's conventions (module docstring).

    Args:
        img: images in ``[0, max_value]``.
        ref: reference images, same shape.
        crop_border: pixels removed on each side before scoring (BasicSR: the scale factor).
        test_y_channel: score the BT.601 Y channel of RGB images.
        max_value: the peak value of the input range (1.0 for [0, 1] tensors, 255 for 8-bit values).
        quantize: clamp and round to 8-bit first, as BasicSR's test scripts do.

    Shape:
        - img, ref: ``(B, C, H, W)`` or ``(C, H, W)``
        - Output: ``(B,)`` float64, or a 0-d tensor for ``(C, H, W)`` inputs; ``inf`` where identical

    Examples:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> psnr(x, x + 0.1).round(decimals=6)
        tensor([20.], dtype=torch.float64)
        >>> psnr(x[0], x[0])
        tensor(inf, dtype=torch.float64)
    """
    x, y, single = _prepare(img, ref, crop_border, test_y_channel, max_value, quantize)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    result = 10.0 * torch.log10(1.0 / mse)
    return result[0] if single else result


def _gaussian_taps() -> list[float]:
    """The 1-D factor of BasicSR's 11x11 window (``cv2.getGaussianKernel(11, 1.5)``), normalised in float64."""
    coords = torch.arange(_SSIM_WINDOW, dtype=torch.float64) - (_SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-coords.pow(2) / (2 * _SSIM_SIGMA**2))
    return (kernel / kernel.sum()).tolist()


def _valid_filter(t: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable "valid" filtering of the last two axes of ``(..., H, W)``: rows, then columns.

    The window is the outer product of ``taps``, so two 1-D passes give the 2-D filter up to float64 rounding.
    On CPU, float64 convolutions take a slow generic path (seconds for a 576x720 frame); here each pass is
    eleven scaled slice additions over the whole stack, few large operations (on a busy machine every
    operation's thread synchronisation costs more than its arithmetic, which rules out tiling in cache).
    """
    n = len(taps)
    h, w = t.shape[-2:]
    rows = t[..., :, : w - n + 1] * taps[0]
    for i in range(1, n):
        rows.add_(t[..., :, i : i + w - n + 1], alpha=taps[i])
    out = rows[..., : h - n + 1, :] * taps[0]
    for i in range(1, n):
        out.add_(rows[..., i : i + h - n + 1, :], alpha=taps[i])
    return out


def ssim(
    img: torch.Tensor,
    ref: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    max_value: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004), per sample, with BasicSR's conventions (module docstring).

    Arguments as for :func:`psnr`. After cropping, images must be at least 11x11 (the Gaussian window).

    Shape:
        - img, ref: ``(B, C, H, W)`` or ``(C, H, W)``
        - Output: ``(B,)`` float64 in [-1, 1], or a 0-d tensor for ``(C, H, W)`` inputs; 1 where identical

    Examples:
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(x, x)
        tensor([1., 1.], dtype=torch.float64)
    """
    x, y, single = _prepare(img, ref, crop_border, test_y_channel, max_value, quantize)
    h, w = x.shape[-2:]
    if min(h, w) < _SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after cropping, got {h}x{w}")
    x, y = x * 255.0, y * 255.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # One filtering of the stack of the four statistics SSIM needs; x^2 + y^2 is filtered at once (the filter
    # is linear), since only sigma_x^2 + sigma_y^2 enters the formula.
    mu_x, mu_y, squares, xy = _valid_filter(torch.stack([x, y, x * x + y * y, x * y]), _gaussian_taps())
    mu_xy = mu_x * mu_y
    mu_sq = mu_x.square() + mu_y.square()
    variances = squares - mu_sq
    cov = xy - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_sq + c1) * (variances + c2))
    result = ssim_map.mean(dim=(1, 2, 3))
    return cast(torch.Tensor, result[0] if single else result)
