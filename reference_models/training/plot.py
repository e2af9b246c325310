"""Training curves as a PNG, drawn with Pillow (no plotting library needed).

Two panels: the training loss against the step (log scale, raw values in light grey and a moving average
on top), and the validation Y-PSNR against the step, with the bicubic baseline as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_curves"]

_W, _H, _PAD = 480, 320, 56


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _panel(draw, box, points, title, log_y=False, smooth=False, baseline=None, colour=(31, 119, 180)):  # noqa: ANN001
    from PIL import ImageFont

    font = ImageFont.load_default()
    x0, y0, x1, y1 = box
    left, top, right, bottom = x0 + _PAD, y0 + 28, x1 - 16, y1 - 36
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, y0 + 8), title, fill=(0, 0, 0), font=font)
    pts = [(float(s), float(v)) for s, v in points if v is not None and math.isfinite(v) and (v > 0 or not log_y)]
    if not pts:
        draw.text((left + 10, top + 10), "no data yet", fill=(120, 120, 120), font=font)
        return
    ys = [math.log10(v) if log_y else v for _, v in pts]
    extra = [baseline] if baseline is not None and math.isfinite(baseline) else []
    lo, hi = min(ys + extra), max(ys + extra)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    margin = 0.05 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    smin, smax = min(s for s, _ in pts), max(s for s, _ in pts)
    smax = smax if smax > smin else smin + 1

    def to_px(s: float, y: float) -> tuple[float, float]:
        return left + (s - smin) / (smax - smin) * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top)

    for t in _ticks(lo, hi):
        _, py = to_px(smin, t)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        label = f"{10 ** t:.2g}" if log_y else f"{t:.4g}"
        draw.text((x0 + 4, py - 6), label, fill=(0, 0, 0), font=font)
    for t in _ticks(smin, smax, 4):
        px, _ = to_px(t, lo)
        draw.line([px, bottom, px, bottom + 4], fill=(0, 0, 0))
        draw.text((px - 10, bottom + 8), f"{t:.0f}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 12, bottom + 22), "step", fill=(0, 0, 0), font=font)

    if baseline is not None and math.isfinite(baseline):
        _, py = to_px(smin, baseline)
        for xs in range(int(left), int(right), 12):
            draw.line([xs, py, min(xs + 6, right), py], fill=(214, 39, 40), width=2)
        draw.text((right - 110, py - 14), "bicubic", fill=(214, 39, 40), font=font)
    line = [to_px(s, y) for (s, _), y in zip(pts, ys)]
    if smooth and len(line) > 20:
        draw.line(line, fill=(200, 200, 200), width=1)
        avg = _moving_average(ys, max(5, len(ys) // 50))
        line = [to_px(s, y) for (s, _), y in zip(pts, avg)]
    if len(line) > 1:
        draw.line(line, fill=colour, width=2)
    for px, py in line if len(line) <= 50 else []:
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)


def plot_curves(
    losses: Sequence[tuple[int, float]],
    psnrs: Sequence[tuple[int, float]],
    path: str | Path,
    baseline: float | None = None,
) -> None:
    """Write a two-panel PNG: training loss (``(step, loss)`` pairs) and validation PSNR (``(step, dB)``).

    Args:
        losses: the training loss per step.
        psnrs: validation Y-PSNR per validation step (may be empty).
        path: the PNG to write.
        baseline: the bicubic Y-PSNR, drawn as a dashed line on the PSNR panel.
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (2 * _W, _H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    _panel(draw, (0, 0, _W, _H), losses, "training loss (log scale)", log_y=True, smooth=True)
    _panel(draw, (_W, 0, 2 * _W, _H), psnrs, "validation PSNR-Y (dB)", baseline=baseline, colour=(44, 160, 44))
    image.save(path)
