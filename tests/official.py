"""The recorded outputs of the official MANA and VSR-Transformer code, kept in the repository.

``tests/fixtures/official/`` holds the two recorded runs (``README.md`` there documents every tensor). They
are never regenerated from this package's code. A missing file is a test failure, not a skip: the parity
tests are the reason the official converters can be trusted.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["OFFICIAL", "MANA_FIXTURE", "VSRT_FIXTURE", "load_official"]

OFFICIAL = Path(__file__).resolve().parent / "fixtures" / "official"
MANA_FIXTURE = OFFICIAL / "mana_case1.pt"
VSRT_FIXTURE = OFFICIAL / "vsrt_case1.pt"


def load_official(path: Path) -> dict:
    """The fixture dict (``config``, ``state_dict``, ``inputs``, ``outputs``, ``intermediates``, ...).

    Raises:
        FileNotFoundError: the fixture is missing from the checkout (a failure, never a skip).
    """
    if not path.is_file():
        raise FileNotFoundError(f"official fixture {path} is missing from the checkout (tests/fixtures/official)")
    return torch.load(path, map_location="cpu", weights_only=True)
