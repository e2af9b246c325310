"""Where the recorded outputs of the official MANA and VSR-Transformer code live (``shared/fixtures/official``).

``VSRBLOCKS_FIXTURES`` wins; otherwise the ``shared/`` folder beside the checkout, wherever it was cloned.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _official_dir() -> Path:
    if os.environ.get("VSRBLOCKS_FIXTURES"):
        return Path(os.environ["VSRBLOCKS_FIXTURES"])
    for candidate in (_REPO.parent / "shared" / "fixtures" / "official", Path("/work/shared/fixtures/official")):
        if candidate.is_dir():
            return candidate
    return _REPO.parent / "shared" / "fixtures" / "official"


OFFICIAL = _official_dir()
MANA_FIXTURE = OFFICIAL / "mana_case1.pt"
VSRT_FIXTURE = OFFICIAL / "vsrt_case1.pt"
