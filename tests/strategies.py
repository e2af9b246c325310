"""Shared hypothesis strategies: small tensor shapes, odd sizes included, and seeded tensors."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

batches = st.integers(min_value=1, max_value=2)
frames = st.integers(min_value=1, max_value=5)
odd_frames = st.sampled_from([1, 3, 5])
channels = st.sampled_from([1, 3, 4, 8])
sizes = st.integers(min_value=3, max_value=13)
even_sizes = st.sampled_from([4, 6, 8, 10, 12])
seeds = st.integers(min_value=0, max_value=2**16)


@st.composite
def frame_shapes(draw, channels=channels, height=sizes, width=sizes) -> tuple[int, int, int, int]:
    """``(B, C, H, W)`` with odd and even spatial sizes."""
    return (draw(batches), draw(channels), draw(height), draw(width))


@st.composite
def clip_shapes(draw, frames=frames, channels=channels, height=sizes, width=sizes) -> tuple[int, int, int, int, int]:
    """``(B, T, C, H, W)`` with odd and even spatial sizes."""
    return (draw(batches), draw(frames), draw(channels), draw(height), draw(width))


def seeded_rand(shape, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A reproducible uniform [0, 1) tensor that does not touch the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=dtype)


def seeded_randn(shape, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A reproducible standard-normal tensor that does not touch the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype)


def seeded_parameters_(module: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Every parameter re-drawn from ``N(0, std^2)`` with a seeded generator, zero-initialised ones (offset
    convolutions, gates) included, so that no path of the block is trivial. Returns ``module``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(std * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module
