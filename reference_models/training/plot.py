"""Training curves as a PNG: with matplotlib (the ``plot`` extra) where it is installed, else with Pillow (in the
core install), so that every training run and the demo draw their curve.

Two panels: the training loss against the step (log scale, raw values in light grey and a moving average
on top), and the validation Y-PSNR against the step, with the bicubic baseline as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves"]


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (fewer at the start)."""
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, values.size + 1)
    lower = np.maximum(index - window, 0)
    return (cumsum[index] - cumsum[lower]) / (index - lower)


def plot_curves(
    losses: Sequence[tuple[int, float]],
    psnrs: Sequence[tuple[float, float]],
    path: str | Path,
    baseline: float | None = None,
) -> bool:
    """Write a two-panel PNG: training loss (``(step, loss)`` pairs) and validation PSNR (``(step, dB)``).

    Args:
        losses: the training loss per step (non-finite or non-positive values are left out of the log plot).
        psnrs: validation Y-PSNR per validation step (may be empty).
        path: the PNG to write.
        baseline: the bicubic Y-PSNR, drawn as a dashed line on the PSNR panel.

    Returns:
        ``True`` when drawn with matplotlib, ``False`` when drawn with Pillow (matplotlib is not installed).
    """
    pts = np.array(
        [(s, v) for s, v in losses if v is not None and math.isfinite(v) and v > 0], dtype=np.float64
    ).reshape(-1, 2)
    val = np.array([(s, v) for s, v in psnrs if v is not None and math.isfinite(v)], dtype=np.float64).reshape(-1, 2)
    try:
        # A bare Figure renders with Agg without touching pyplot's global backend.
        from matplotlib.figure import Figure
    except ImportError:
        _plot_with_pillow(pts, val, Path(path), baseline)
        return False

    fig = Figure(figsize=(9.6, 3.2), dpi=100, layout="constrained")
    ax_loss, ax_psnr = fig.subplots(1, 2)
    if len(pts):
        steps, values = pts[:, 0], pts[:, 1]
        if len(values) > 20:
            ax_loss.plot(steps, values, color="0.8", linewidth=0.8, label="per step")
            ax_loss.plot(
                steps, _moving_average(values, max(5, len(values) // 50)), color="tab:blue", label="moving average"
            )
            ax_loss.legend(loc="upper right", fontsize="small")
        else:
            ax_loss.plot(steps, values, color="tab:blue", marker="o", markersize=3)
        ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no data yet", transform=ax_loss.transAxes, ha="center", color="0.5")
    ax_loss.set(title="training loss", xlabel="step")

    if len(val):
        ax_psnr.plot(val[:, 0], val[:, 1], color="tab:green", marker="o", markersize=3, label="model")
    else:
        ax_psnr.text(0.5, 0.5, "no validation yet", transform=ax_psnr.transAxes, ha="center", color="0.5")
    if baseline is not None and math.isfinite(baseline):
        ax_psnr.axhline(baseline, color="tab:red", linestyle="--", label="bicubic")
    if len(val) or baseline is not None:
        ax_psnr.legend(loc="lower right", fontsize="small")
    ax_psnr.set(title="validation PSNR-Y (dB)", xlabel="step")
    fig.savefig(path)
    return True


_WIDTH, _HEIGHT, _MARGIN = 480, 320, (56, 28, 16, 40)  # panel size; margins left, top, right, bottom


def _panel(
    image: Any,
    left: int,
    title: str,
    series: list[tuple[np.ndarray, tuple[int, int, int], bool]],
    log: bool,
    hline: float | None,
) -> None:
    """One panel: ``series`` of ``(points (N, 2), colour, markers)``, an optional dashed horizontal line."""
    from PIL import ImageDraw, ImageFont

    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    x0, y0 = left + _MARGIN[0], _MARGIN[1]
    x1, y1 = left + _WIDTH - _MARGIN[2], _HEIGHT - _MARGIN[3]
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
    draw.text((x0, 8), title, fill=(0, 0, 0), font=font)
    draw.text(((x0 + x1) // 2 - 10, y1 + 22), "step", fill=(0, 0, 0), font=font)
    points = [p for p, _, _ in series if len(p)]
    if not points:
        draw.text(((x0 + x1) // 2 - 30, (y0 + y1) // 2), "no data yet", fill=(128, 128, 128), font=font)
        return
    every = np.concatenate(points)
    ys = np.log10(every[:, 1]) if log else every[:, 1]
    if hline is not None:
        ys = np.append(ys, hline)
    xlo, xhi = float(every[:, 0].min()), float(every[:, 0].max())
    ylo, yhi = float(ys.min()), float(ys.max())
    xhi, yhi = (xhi if xhi > xlo else xlo + 1), (yhi if yhi > ylo else ylo + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        y = math.log10(y) if log else y
        return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    for value, y in ((ylo, y1), (yhi, y0)):
        label = f"{10**value:.3g}" if log else f"{value:.2f}"
        draw.text((left + 4, y - 6), label, fill=(0, 0, 0), font=font)
    for value, x in ((xlo, x0), (xhi, x1)):
        draw.text((x - 6, y1 + 6), f"{value:g}", fill=(0, 0, 0), font=font)
    if hline is not None:
        _, hy = at(xlo, 10**hline if log else hline)
        for x in range(x0, x1, 12):
            draw.line((x, hy, min(x + 6, x1), hy), fill=(214, 39, 40))
    for pts, colour, markers in series:
        xy = [at(x, y) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        if markers or len(xy) == 1:
            for px, py in xy:
                draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)


def _plot_with_pillow(loss: np.ndarray, val: np.ndarray, path: Path, baseline: float | None) -> None:
    """The same two panels as the matplotlib figure, drawn with Pillow."""
    from PIL import Image

    image = Image.new("RGB", (2 * _WIDTH, _HEIGHT), (255, 255, 255))
    series = [(loss, (31, 119, 180), len(loss) <= 20)]
    if len(loss) > 20:
        smooth = np.stack([loss[:, 0], _moving_average(loss[:, 1], max(5, len(loss) // 50))], axis=1)
        series = [(loss, (204, 204, 204), False), (smooth, (31, 119, 180), False)]
    _panel(image, 0, "training loss (log scale)", series, log=True, hline=None)
    bicubic = baseline if baseline is not None and math.isfinite(baseline) else None
    _panel(
        image, _WIDTH, "validation PSNR-Y (dB); dashed: bicubic", [(val, (44, 160, 44), True)], log=False, hline=bicubic
    )
    image.save(path)
