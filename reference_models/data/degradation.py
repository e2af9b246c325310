"""Making low-resolution frames from high-resolution ones, on the fly and in torch.

Two degradations, the two the VSR literature trains and tests with:

- ``"bicubic"`` (BI): MATLAB-style ``imresize(hr, 1/4, "bicubic")``: the Keys cubic with ``a = -0.5``, widened by
  the scale factor when downsampling (antialiasing). ``F.interpolate(mode="bicubic", antialias=True)`` computes
  exactly this filter inside the image. At the border MATLAB extends the image symmetrically while torch
  renormalises the truncated kernel (up to 0.06 apart in [0, 1] units, on the 2 LR pixels next to the border), so
  we pad symmetrically ourselves before calling torch. Stated tolerance, checked against a numpy port of MATLAB's
  ``imresize`` in ``tests/reference_models/test_training.py``: max absolute difference < 1e-6 on every pixel
  (float64 on CPU; float32 on GPU adds ~1e-6 rounding).
- ``"blur"`` (BD): a Gaussian blur of standard deviation ``blur_sigma`` (1.6 in DUF, TDAN, BasicVSR's BD
  setting), then keep every ``scale``-th pixel, starting with pixel 0. This is DUF's ``DUF_downsample`` as
  BasicSR (``duf_downsample``) and BasicVSR/MMagic use it: a 13x13 kernel (scipy's ``gaussian_filter`` of a
  dirac, i.e. the Gaussian truncated at 4 sigma, radius ``int(4 sigma + 0.5)`` = 6 for sigma 1.6), reflect
  padding, a stride-``scale`` convolution whose kept outputs are centred on HR pixels ``0, scale, 2 scale, ...``
  (DUF pads ``6 + 2 scale`` and trims 2 LR pixels per side, which lands on offset 0 for scale 4). Checked
  against that recipe in ``tests/reference_models/data/test_degradation.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "blur_radius",
    "bicubic_downsample",
    "bicubic_upsample",
    "gaussian_kernel1d",
    "gaussian_blur",
    "blur_downsample",
    "degrade",
    "degradation_margin",
    "DEGRADATIONS",
]

DEGRADATIONS = ("bicubic", "blur")


def _as_frames(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Fold every leading axis into the batch so that ``(..., C, H, W)`` becomes ``(N, C, H, W)``."""
    if x.dim() < 3:
        raise ValueError(f"expected (..., C, H, W), got {tuple(x.shape)}")
    lead = tuple(x.shape[:-3])
    return x.reshape(-1, *x.shape[-3:]), lead


def _symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Pad ``pad`` entries on both sides of ``dim`` by mirroring with the edge repeated (MATLAB's
    ``"symmetric"``), repeating the mirror for sizes smaller than ``pad``."""
    n = x.shape[dim]
    period = torch.cat([torch.arange(n), torch.arange(n - 1, -1, -1)])
    index = period[torch.arange(-pad, n + pad) % (2 * n)].to(x.device)
    return x.index_select(dim, index)


def bicubic_downsample(hr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """MATLAB-style antialiased bicubic downsampling by an integer ``scale``.

    Args:
        hr: frames or clips ``(..., C, H, W)``, float, values in ``[0, 1]``; ``H`` and ``W`` multiples of ``scale``.
        scale: integer downsampling factor.

    Returns:
        ``(..., C, H // scale, W // scale)``, not clamped (like MATLAB's ``imresize`` on double images).

    Examples:
        >>> bicubic_downsample(torch.rand(2, 5, 3, 32, 24)).shape
        torch.Size([2, 5, 3, 8, 6])
    """
    frames, lead = _as_frames(hr)
    h, w = frames.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downsample: H and W must be multiples of scale={scale}, got {(h, w)}")
    dtype = frames.dtype
    # float64 on CPU keeps the filter exact; bicubic antialias has no half-precision kernel on CPU.
    work = frames.double() if frames.device.type == "cpu" else frames.float()
    # MATLAB extends the image symmetrically (edge pixel repeated) where the widened kernel leaves it;
    # ``2 * scale`` HR pixels cover the kernel's reach, i.e. 2 LR pixels that are trimmed afterwards.
    pad = 2 * scale
    work = _symmetric_pad(_symmetric_pad(work, pad, dim=-2), pad, dim=-1)
    lr = F.interpolate(work, size=(h // scale + 4, w // scale + 4), mode="bicubic", align_corners=False, antialias=True)
    lr = lr[..., 2:-2, 2:-2]
    return lr.to(dtype).reshape(*lead, *lr.shape[-3:])


def bicubic_upsample(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """MATLAB-style bicubic upsampling, ``imresize(lr, scale, "bicubic")``: the "bicubic" baseline of SR papers.

    Args:
        lr: ``(..., C, h, w)`` float.
        scale: integer upsampling factor.

    Returns:
        ``(..., C, scale * h, scale * w)``, not clamped.

    Examples:
        >>> bicubic_upsample(torch.rand(2, 3, 5, 7)).shape
        torch.Size([2, 3, 20, 28])
    """
    lead, (c, h, w) = lr.shape[:-3], lr.shape[-3:]
    x = lr.reshape(-1, c, h, w)
    dtype = x.dtype
    x = x.double() if x.device.type == "cpu" else x.float()
    # torch's antialiased bicubic uses a = -0.5 (its plain bicubic uses -0.75); 2 pixels of symmetric
    # padding cover the kernel, as in MATLAB's imresize.
    x = _symmetric_pad(_symmetric_pad(x, 2, dim=-2), 2, dim=-1)
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False, antialias=True)
    up = up[..., 2 * scale : -2 * scale, 2 * scale : -2 * scale]
    return up.to(dtype).reshape(*lead, c, h * scale, w * scale)


def blur_radius(sigma: float) -> int:
    """Taps on each side of a Gaussian of standard deviation ``sigma`` truncated at 4 sigma, as scipy's
    ``gaussian_filter`` rounds it (``int(4 sigma + 0.5)``: 6 for DUF's 13-tap sigma 1.6 kernel)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return int(4 * sigma + 0.5)


def gaussian_kernel1d(sigma: float, radius: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` over ``2 * radius + 1`` taps
    (``radius`` defaults to :func:`blur_radius`, scipy's and DUF's truncation)."""
    radius = blur_radius(sigma) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(..., C, H, W)`` with reflect padding (the image size is kept)."""
    frames, lead = _as_frames(x)
    k = gaussian_kernel1d(sigma, dtype=frames.dtype).to(frames.device)
    r = (k.numel() - 1) // 2
    c = frames.shape[1]
    # Reflect padding needs the pad to be smaller than the image; replicate works for any size.
    mode = "reflect" if min(frames.shape[-2:]) > r else "replicate"
    out = F.pad(frames, (r, r, r, r), mode=mode)
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out.reshape(*lead, *out.shape[-3:])


def blur_downsample(hr: torch.Tensor, scale: int = 4, sigma: float = 1.6) -> torch.Tensor:
    """The BD degradation: Gaussian blur of standard deviation ``sigma``, then every ``scale``-th pixel.

    Examples:
        >>> blur_downsample(torch.rand(3, 16, 20)).shape
        torch.Size([3, 4, 5])
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"blur_downsample: H and W must be multiples of scale={scale}, got {(h, w)}")
    return gaussian_blur(hr, sigma)[..., ::scale, ::scale]


def degrade(hr: torch.Tensor, scale: int = 4, kind: str = "bicubic", blur_sigma: float = 1.6) -> torch.Tensor:
    """Low-resolution frames from ``hr`` ``(..., C, H, W)`` by degradation ``kind`` (``"bicubic"`` or ``"blur"``)."""
    if kind == "bicubic":
        return bicubic_downsample(hr, scale)
    if kind == "blur":
        return blur_downsample(hr, scale, blur_sigma)
    raise ValueError(f"unknown degradation {kind!r}; available: {', '.join(DEGRADATIONS)}")


def degradation_margin(scale: int = 4, kind: str = "bicubic", blur_sigma: float = 1.6) -> int:
    """How many HR pixels beyond a crop influence its LR pixels (rounded up to a multiple of ``scale``).

    Degrading a crop padded by this margin and trimming gives the same LR as degrading the whole frame.
    """
    support = 2 * scale if kind == "bicubic" else blur_radius(blur_sigma)
    return scale * math.ceil(support / scale)
