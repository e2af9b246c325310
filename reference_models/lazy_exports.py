"""Package attributes imported on first access (PEP 562).

The command line imports ``reference_models`` (and ``.data``, ``.training``) to parse its arguments; importing
torch there would make every ``--help`` take seconds. A package ``__init__`` lists its public names and the
module each comes from, and this builds the module-level ``__getattr__`` and ``__dir__`` that import them
when first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names are ``exports`` (name -> module).

    Examples:
        >>> import reference_models
        >>> reference_models.list_models()
        ['basicvsr', 'basicvsrpp', 'dasaa', 'edvr', 'iconvsr', 'mafnet', 'mana', 'vsrt']
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
