"""Small, fast training fixtures: a residual network, textured clips, a folder of clips for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from reference_models.training import TensorClip, TrainConfig

REPO = Path(__file__).resolve().parents[3]


class TinyVSR(nn.Module):
    """A residual-on-bilinear network, small enough to train in well under a second per step on CPU."""

    num_frames, scale, output_mode = 3, 4, "center"

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(9, channels, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(channels, 48, 3, padding=1)
        )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        base = nn.functional.interpolate(clip[:, 1], scale_factor=4, mode="bilinear", align_corners=False)
        return nn.functional.pixel_shuffle(self.body(clip.flatten(1, 2)), 4) + base


def photo(seed: int = 0, t: int = 3, size: int = 32) -> np.ndarray:
    """``t`` uint8 frames of a photo, shifted a pixel per frame: real texture, real motion."""
    import skimage.data

    img = skimage.data.coffee()
    y0 = 100 + 9 * seed
    return np.stack([img[y0 : y0 + size, 200 + k : 200 + k + size] for k in range(t)])


def photo_clip(seed: int = 0, t: int = 3, size: int = 32) -> TensorClip:
    return TensorClip(torch.from_numpy(photo(seed, t, size)).permute(0, 3, 1, 2).float() / 255)


def config(tmp_path: Path, **kw) -> TrainConfig:
    base = {
        "output_dir": str(tmp_path),
        "progress": False,
        "device": "cpu",
        "val_every": 0,
        "checkpoint_every": 0,
        "log_every": 1,
    }
    return TrainConfig(**{**base, **kw})


def clip_folder(root: Path, clips: int = 2, t: int = 5, size: int = 32) -> Path:
    """``root`` with ``clips`` sub-folders of PNG frames."""
    for c in range(clips):
        folder = root / f"clip{c}"
        folder.mkdir(parents=True)
        for k, frame in enumerate(photo(c, t, size)):
            Image.fromarray(frame).save(folder / f"{k:03d}.png")
    return root


def python_env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout (not an installed copy)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def run_python(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=python_env(), capture_output=True, text=True, **kw)
