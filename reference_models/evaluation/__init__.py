"""Evaluation with the published VSR protocol (the command is ``python -m reference_models evaluate``,
:mod:`reference_models.cli.evaluate`).

The protocol itself (which imports torch) is :mod:`reference_models.evaluation.protocol`:

>>> from reference_models.evaluation.protocol import bicubic_upscaler, evaluate_dataset
"""

from reference_models.evaluation.table import markdown_table

__all__ = ["markdown_table"]
