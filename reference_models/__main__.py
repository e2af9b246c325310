"""``python -m reference_models``: see :mod:`reference_models.cli`."""

import sys

from reference_models.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
