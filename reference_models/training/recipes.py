"""The papers' optimiser settings and the pixel losses the trainer offers (plain values: the command line
shows them in ``--help`` without importing torch)."""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_RECIPES", "DEFAULT_RECIPE", "LOSSES", "NONFINITE_POLICIES"]

#: Learning rate and Adam betas of each paper (DASAA and MAFnet: assumptions, see ``specs/dasaa_mafnet.md``).
PAPER_RECIPES: dict[str, dict[str, Any]] = {
    "mana": {"lr": 1e-4, "betas": (0.5, 0.99)},
    "vsrt": {"lr": 2e-4, "betas": (0.9, 0.99)},
    "dasaa": {"lr": 2e-4, "betas": (0.9, 0.999)},
    "mafnet": {"lr": 2e-4, "betas": (0.9, 0.999)},
}
#: Adam settings of a model no paper recipe names.
DEFAULT_RECIPE: dict[str, Any] = {"lr": 2e-4, "betas": (0.9, 0.99)}
LOSSES = ("charbonnier", "l1")
#: What a non-finite loss (or gradient) does: stop the run, or skip that step's update.
NONFINITE_POLICIES = ("stop", "skip")
