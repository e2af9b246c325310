"""Griffe extension: Sphinx roles in docstrings (``:mod:`x```, ``:class:`~a.b.C```) rendered as code.

The docstrings are also read by ``help()`` and IDEs, where the roles are familiar; in Markdown they would show
their colons. The role is dropped and the target kept as inline code (``~`` keeps only the last component, as
Sphinx does).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|obj|exc|const|ref):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match["target"]
    if match["tilde"]:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
