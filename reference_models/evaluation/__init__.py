"""Evaluation with the published VSR protocol: ``python -m reference_models evaluate``.

The protocol itself (which imports torch) is :mod:`reference_models.evaluation.protocol`:

>>> from reference_models.evaluation.protocol import bicubic_upscaler, evaluate_dataset
"""

from reference_models.evaluation.cli import build_parser, main
from reference_models.evaluation.table import markdown_table

__all__ = ["build_parser", "main", "markdown_table"]
