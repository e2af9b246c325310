"""The published evaluation protocol of video super-resolution, on a :class:`reference_models.data.VideoSet`.

As in BasicVSR's, EDVR's and MANA's tables: every frame of every clip (Vid4, REDS4) or, for Vimeo-90K-T, the
centre frame ``im4`` of each septuplet (``all_frames`` for all seven); LR frames provided by the dataset are
used as they are, otherwise made from the HR frames with BI or BD and rounded to 8 bits as stored LR frames
are; the SR frames are rounded to 8 bits too; PSNR and SSIM (:func:`vsrblocks.psnr`, :func:`vsrblocks.ssim`,
BasicSR's conventions) on the BT.601 Y channel and on RGB, per frame, averaged per clip, and the dataset's
mean is the **mean over clips** (a long clip weighs as much as a short one). No border is cropped unless
asked (BasicVSR's tables use ``crop_border=0``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reference_models.data.dataset import Clip
from reference_models.data.degradation import bicubic_upsample, degrade
from reference_models.data.video_set import DEGRADATION_KINDS, VideoSet
from vsrblocks.metrics import psnr, ssim

__all__ = ["METRICS", "Upscaler", "bicubic_upscaler", "evaluate_dataset", "frame_metrics", "to_uint8"]

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")

#: Maps the LR frames of one clip, ``(3, h, w)`` uint8 in order, to its SR frames ``(3, sh, sw)`` (any float
#: range [0, 1] values, rounded to 8 bits by the protocol), one per LR frame, in order.
Upscaler = Callable[[Iterable[torch.Tensor]], Iterable[torch.Tensor]]


def to_uint8(frame: torch.Tensor) -> torch.Tensor:
    """A float frame in [0, 1] clamped and rounded to 8 bits, as written to PNG."""
    return frame.clamp(0, 1).mul(255).round().to(torch.uint8)


def bicubic_upscaler(scale: int = 4) -> Upscaler:
    """The "Bicubic" row of the papers' tables: MATLAB ``imresize(lr, scale, "bicubic")`` of every LR frame."""

    def upscale(frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for frame in frames:
            yield bicubic_upsample(frame.double().div(255), scale)

    return upscale


def frame_metrics(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0) -> dict[str, float]:
    """PSNR and SSIM of one 8-bit ``(3, H, W)`` frame pair, on the Y channel and on RGB."""
    x, y = sr.unsqueeze(0), hr.unsqueeze(0)
    options: dict[str, Any] = {"crop_border": crop_border, "max_value": 255.0}
    return {
        "psnr_y": float(psnr(x, y, test_y_channel=True, **options)[0]),
        "ssim_y": float(ssim(x, y, test_y_channel=True, **options)[0]),
        "psnr_rgb": float(psnr(x, y, **options)[0]),
        "ssim_rgb": float(ssim(x, y, **options)[0]),
    }


def _frame_name(clip: Clip, index: int) -> str:
    paths = getattr(clip, "paths", None)
    return f"{Path(paths[index]).stem}.png" if paths is not None else f"{index:08d}.png"


def _lr_frames(hr: Clip, lr: Clip | None, scale: int, degradation: str) -> Iterator[torch.Tensor]:
    for i in range(len(hr)):
        if lr is not None:
            yield lr[i]
            continue
        frame = hr[i]
        h, w = frame.shape[-2:]
        frame = frame[:, : h - h % scale, : w - w % scale].double().div(255)
        yield to_uint8(degrade(frame, scale, DEGRADATION_KINDS[degradation]))


def evaluate_dataset(
    dataset: VideoSet,
    upscaler: Upscaler,
    model_name: str,
    degradation: str = "bi",
    crop_border: int = 0,
    all_frames: bool = False,
    save_frames: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``upscaler`` on ``dataset`` with the published protocol (module docstring).

    Args:
        dataset: the clips (and the provided LR clips, if any).
        upscaler: LR frames of a clip to SR frames (:func:`bicubic_upscaler`, or a model through
            :func:`reference_models.inference.upscale.upscale_frames`).
        model_name: the name written in the result.
        degradation: ``"bi"`` or ``"bd"``: how LR frames are made when the dataset provides none.
        crop_border: pixels ignored on every side by the metrics.
        all_frames: score every frame also where the protocol scores only the centre one (Vimeo-90K-T).
        save_frames: write the 8-bit SR frames as PNG to ``save_frames/<clip>/``.
        progress: a tqdm bar over the frames.

    Returns:
        ``{"dataset", "model", "degradation", "clips": {clip: {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb",
        "frames"}}, "mean": {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}}``: per-clip means of the scored
        frames, and their mean over clips.
    """
    from tqdm.auto import tqdm

    if degradation not in DEGRADATION_KINDS:
        raise ValueError(f"degradation must be one of {', '.join(DEGRADATION_KINDS)}, got {degradation!r}")
    if crop_border < 0:
        raise ValueError(f"crop border must be >= 0, got {crop_border}")
    scale = dataset.scale
    lr_clips = dataset.lr if dataset.lr is not None else [None] * len(dataset.hr)
    clips: dict[str, dict[str, float | int]] = {}
    with tqdm(total=sum(len(c) for c in dataset.hr), unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for hr_clip, lr_clip in zip(dataset.hr, lr_clips):
            n = len(hr_clip)
            scored = {n // 2} if dataset.centre_only and not all_frames else set(range(n))
            per_frame = []
            outputs = upscaler(_lr_frames(hr_clip, lr_clip, scale, degradation))
            for i, out in enumerate(outputs):
                sr = to_uint8(out.cpu())
                if save_frames is not None:
                    folder = Path(save_frames) / hr_clip.name
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(sr.permute(1, 2, 0).numpy())).save(
                        folder / _frame_name(hr_clip, i)
                    )
                if i in scored:
                    per_frame.append(frame_metrics(sr, hr_clip[i][:, : sr.shape[-2], : sr.shape[-1]], crop_border))
                bar.update(1)
            if len(per_frame) != len(scored):
                raise RuntimeError(f"clip {hr_clip.name!r}: the upscaler returned fewer frames than the {n} LR frames")
            clips[hr_clip.name] = {m: float(np.mean([f[m] for f in per_frame])) for m in METRICS}
            clips[hr_clip.name]["frames"] = len(per_frame)
    mean = {m: float(np.mean([c[m] for c in clips.values()])) for m in METRICS}
    return {"dataset": dataset.name, "model": model_name, "degradation": degradation, "clips": clips, "mean": mean}
