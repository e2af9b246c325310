"""Tiny deterministic stand-ins for reference models, and frame fixtures, for the inference and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class LocalVSR(nn.Module):
    """A reference-model stand-in with a known receptive field: every frame of the window is mixed by one
    3x3 conv (radius 1 LR pixel) whose weights depend on the frame's position in the window, then
    pixel-shuffled. ``output_mode`` "center" returns the centre frame, "all" every frame (each output frame
    sees the whole window, in window order)."""

    def __init__(self, num_frames: int = 3, scale: int = 2, output_mode: str = "center", seed: int = 0) -> None:
        super().__init__()
        self.num_frames, self.scale, self.output_mode = num_frames, scale, output_mode
        outputs = 1 if output_mode == "center" else num_frames
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3 * num_frames, outputs * 3 * scale * scale, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.2)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator) * 0.1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        assert t == self.num_frames, (t, self.num_frames)
        out = self.shuffle(self.conv(clip.reshape(b, t * c, h, w)))
        if self.output_mode == "center":
            return out
        return out.reshape(b, t, 3, self.scale * h, self.scale * w)


class FrameIndexVSR(nn.Module):
    """Output = a fingerprint of which frames the window holds, in which order: with frame ``k`` filled
    with the value ``k`` (< 10), output pixel ``= sum_j frame_j * 10**j`` (centre mode), or frame ``j`` of the
    output ``= frame_j + 1000 * j`` (all mode)."""

    def __init__(self, num_frames: int, output_mode: str = "center", scale: int = 1) -> None:
        super().__init__()
        self.num_frames, self.scale, self.output_mode = num_frames, scale, output_mode

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        clip = clip.double().repeat_interleave(self.scale, -1).repeat_interleave(self.scale, -2)
        if self.output_mode == "center":
            weights = torch.tensor([10.0**j for j in range(clip.shape[1])], dtype=clip.dtype)
            return (clip * weights.view(1, -1, 1, 1, 1)).sum(1)
        offsets = 1000.0 * torch.arange(clip.shape[1], dtype=clip.dtype)
        return clip + offsets.view(1, -1, 1, 1, 1)


def random_frames(num: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(num)]


def write_folder(folder: Path, frames: list[np.ndarray], names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / (names[i] if names else f"frame{i + 1}.png"))
    return folder


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A lossless (FFV1 in MKV) video, so decoding gives the frames back exactly."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "rgb24" if "rgb24" in [f.name for f in stream.codec.video_formats] else "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def image_like_clip(frames: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """Smooth frames in [0, 1] (bicubic enlargements of coarse noise), ``(1, T, 3, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 3, height // 4 + 1, width // 4 + 1, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)[None]


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The final convolution: ``conv_last`` (the papers' networks) or that of the x4 tail (the standard networks)."""
    conv = getattr(model, "conv_last", None)
    return conv if conv is not None else model.upsample.conv_last


def scale_last_conv(model: nn.Module, clip: torch.Tensor, std: float = 0.1) -> float:
    """Scale the final convolution so that the residual over the bilinear/bicubic base (all frames of ``clip``)
    has ``std``, as a trained network's (random weights leave VSRT's at 1.9: bfloat16 accuracy would then be
    measured on noise); returns the std before."""
    conv = last_conv(model)
    residuals: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda module, args, out: residuals.append(out.flatten()))
    with torch.no_grad():
        model(clip)
    handle.remove()
    before = torch.cat(residuals).double().std().item()
    with torch.no_grad():
        conv.weight.mul_(std / before)
        conv.bias.mul_(std / before)
    return before
