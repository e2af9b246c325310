"""The recorded runs of BasicSR's architecture code (``shared/fixtures/basicsr``, see its README): the ground
truth for BasicVSR, IconVSR, EDVR and BasicVSR++.

The folder lives beside the repository (``../shared/fixtures/basicsr`` of a checkout) or inside it
(``shared/fixtures/basicsr``); ``VSRBLOCKS_BASICSR_FIXTURES`` names it explicitly. A missing fixture is a test
failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["basicsr_fixture", "load_basicsr"]

_REPO = Path(__file__).resolve().parent.parent


def basicsr_fixture(name: str) -> Path:
    """The path of fixture ``name`` (``"edvr_case1.pt"``).

    Raises:
        FileNotFoundError: no fixture folder holds it (the message lists where it was looked for).
    """
    env = os.environ.get("VSRBLOCKS_BASICSR_FIXTURES")
    folders = [Path(env)] if env else []
    folders += [parent / "shared" / "fixtures" / "basicsr" for parent in (_REPO, *_REPO.parents)]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"BasicSR fixture {name} not found in {', '.join(map(str, folders[:3]))} ...")


def load_basicsr(name: str) -> dict:
    """The fixture dict (``config``, ``state_dict``, ``inputs``, ``outputs``, ``intermediates``, ...)."""
    return torch.load(basicsr_fixture(name), map_location="cpu", weights_only=True)
