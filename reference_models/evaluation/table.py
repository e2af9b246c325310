"""The Markdown table of an evaluation, laid out like a paper's: one row per clip, then the mean over clips."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown_table"]


def markdown_table(result: dict[str, Any]) -> str:
    """Rows of ``result`` (the dict :func:`reference_models.evaluation.protocol.evaluate_dataset` returns):
    PSNR in dB with 2 decimals, SSIM with 4, as the papers print them.

    Examples:
        >>> scores = {"psnr_y": 23.784, "ssim_y": 0.63471, "psnr_rgb": 22.3, "ssim_rgb": 0.61}
        >>> print(markdown_table({"dataset": "vid4", "model": "bicubic", "degradation": "bi",
        ...                       "clips": {"calendar": {**scores, "frames": 41}}, "mean": scores}))
        | vid4 (BI), bicubic | frames | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB |
        |---|---:|---:|---:|---:|---:|
        | calendar | 41 | 23.78 | 0.6347 | 22.30 | 0.6100 |
        | **mean over clips** | 41 | 23.78 | 0.6347 | 22.30 | 0.6100 |
    """

    def cells(scores: dict[str, float]) -> str:
        return f"{scores['psnr_y']:.2f} | {scores['ssim_y']:.4f} | {scores['psnr_rgb']:.2f} | {scores['ssim_rgb']:.4f}"

    title = f"{result['dataset']} ({result['degradation'].upper()}), {result['model']}"
    lines = [f"| {title} | frames | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB |", "|---|---:|---:|---:|---:|---:|"]
    for name, scores in result["clips"].items():
        lines.append(f"| {name} | {scores['frames']} | {cells(scores)} |")
    total = sum(scores["frames"] for scores in result["clips"].values())
    lines.append(f"| **mean over clips** | {total} | {cells(result['mean'])} |")
    return "\n".join(lines)
