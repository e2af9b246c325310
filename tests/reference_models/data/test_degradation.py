"""BD is DUF's Gaussian downsampling, as BasicSR's ``duf_downsample`` and BasicVSR's BD test sets make it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from reference_models.data import blur_downsample


def _duf_downsample(x: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """DUF's recipe, step by step: a 13x13 kernel from scipy's filter of a dirac with sigma 0.4 * scale, reflect
    padding of 6 + 2 * scale, a stride-``scale`` convolution, then 2 LR pixels trimmed on every side."""
    dirac = np.zeros((13, 13))
    dirac[6, 6] = 1
    kernel = torch.from_numpy(gaussian_filter(dirac, 0.4 * scale)).view(1, 1, 13, 13)
    c, h, w = x.shape
    pad = 6 + 2 * scale
    padded = F.pad(x.view(c, 1, h, w), [pad] * 4, mode="reflect")
    return F.conv2d(padded, kernel, stride=scale)[:, 0, 2:-2, 2:-2]


@pytest.mark.parametrize("size", [(32, 40), (48, 24)])
def test_bd_equals_duf_downsample(size):
    hr = torch.rand(3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(blur_downsample(hr, 4, 1.6), _duf_downsample(hr), atol=1e-12, rtol=0)
