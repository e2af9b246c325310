"""Training curves as a PNG, drawn with matplotlib (the ``plot`` extra).

Two panels: the training loss against the step (log scale, raw values in light grey and a moving average
on top), and the validation Y-PSNR against the step, with the bicubic baseline as a dashed line. Without
matplotlib the plot is skipped with one warning: a missing plotting library never stops a training run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_curves"]

_warned_missing = False


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
        ``False`` (after one warning line on stderr per process) when matplotlib is not installed.
    """
    global _warned_missing
    try:
        # A bare Figure renders with Agg without touching pyplot's global backend.
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned_missing:
            print("warning: matplotlib is not installed (pip install 'vsrblocks[plot]'): no curve.png", file=sys.stderr)
            _warned_missing = True
        return False

    fig = Figure(figsize=(9.6, 3.2), dpi=100, layout="constrained")
    ax_loss, ax_psnr = fig.subplots(1, 2)
    pts = np.array([(s, v) for s, v in losses if v is not None and math.isfinite(v) and v > 0], dtype=np.float64).reshape(-1, 2)
    if len(pts):
        steps, values = pts[:, 0], pts[:, 1]
        if len(values) > 20:
            ax_loss.plot(steps, values, color="0.8", linewidth=0.8, label="per step")
            ax_loss.plot(steps, _moving_average(values, max(5, len(values) // 50)), color="tab:blue", label="moving average")
            ax_loss.legend(loc="upper right", fontsize="small")
        else:
            ax_loss.plot(steps, values, color="tab:blue", marker="o", markersize=3)
        ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no data yet", transform=ax_loss.transAxes, ha="center", color="0.5")
    ax_loss.set(title="training loss", xlabel="step")

    val = np.array([(s, v) for s, v in psnrs if v is not None and math.isfinite(v)], dtype=np.float64).reshape(-1, 2)
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
