"""MkDocs hook: an API page lists every name of a package's ``__all__``, read when the site is built.

A line ``<!-- api: PACKAGE -->`` in a page becomes the package's docstring and one mkdocstrings block per public
name, so a block added to a package (and to its ``__all__``) appears in the reference without editing the docs.
The names are read at run time because several packages build ``__all__`` from their lazy-import tables
(``reference_models``, ``.data``, ``.training``), which static analysis cannot evaluate. Each block names the
object where it is defined (``vsrblocks.attention.stcsa.STCSA``), the path that mkdocstrings can load.

A line ``<!-- api: networks -->`` becomes one such section per network in the registry, so a network added to
``reference_models.registry`` gets its page section too.

A name exported by several packages (``reference_models.create_model`` is ``reference_models.checkpoint``'s) is
documented once, under the package nearest to where it is defined; the other pages link there.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path
from typing import Any

_DIRECTIVE = re.compile(r"^<!-- api: (?P<package>[\w.]+) -->$", re.MULTILINE)
_NETWORKS = "<!-- api: networks -->"
_OWN_PACKAGES = ("vsrblocks", "reference_models")

# path of each documented object -> the directive package that documents it in full
_owner: dict[str, str] = {}


def _defined_at(package: types.ModuleType, name: str) -> str:
    obj = getattr(package, name)
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if (
        isinstance(module, str)
        and isinstance(qualname, str)
        and module.split(".")[0] in _OWN_PACKAGES
        and "<" not in qualname
        and getattr(importlib.import_module(module), qualname.split(".")[0], None) is not None
    ):
        return f"{module}.{qualname}"
    # constants and type aliases: the module the package's lazy table names, else the package's own alias
    for table in ("_EXPORTS", "_WHERE"):
        where = getattr(package, table, {})
        if name in where:
            return f"{where[name]}.{name}"
    return f"{package.__name__}.{name}"


def _public(package_name: str) -> list[tuple[str, str, bool]]:
    """``(name, path, is_module)`` for every name of the package's ``__all__``."""
    package = importlib.import_module(package_name)
    names = getattr(package, "__all__", None)
    if names is None:
        raise ValueError(f"{package_name} has no __all__: list its public names there for the API reference")
    return [(name, _defined_at(package, name), isinstance(getattr(package, name), types.ModuleType)) for name in names]


def _nearness(package_name: str, path: str) -> int:
    return len(package_name) if path.startswith(package_name + ".") else -1


def _expand_networks(markdown: str) -> str:
    if _NETWORKS not in markdown:
        return markdown
    from reference_models.registry import list_models, network_module

    modules = [network_module(name).__name__ for name in list_models()]
    sections = "\n".join(f"## `{module}`\n\n<!-- api: {module} -->\n" for module in modules)
    return markdown.replace(_NETWORKS, sections)


def on_config(config: Any) -> Any:
    # document the checkout being built, whatever copy of the packages is installed, from any directory
    root = str(Path(config.config_file_path).resolve().parent)
    sys.path.insert(0, root)
    config.mdx_configs.setdefault("pymdownx.snippets", {})["base_path"] = [root]
    return config


def on_files(files: Any, config: Any) -> Any:
    _owner.clear()
    packages = [
        match["package"]
        for file in files.documentation_pages()
        for match in _DIRECTIVE.finditer(_expand_networks(file.content_string))
    ]
    for package_name in packages:
        for _, path, _ in _public(package_name):
            best = _owner.get(path)
            if best is None or _nearness(package_name, path) > _nearness(best, path):
                _owner[path] = package_name
    return files


def api_blocks(package_name: str, on_page: set[str]) -> str:
    blocks = [f"::: {package_name}\n    options:\n      members: false\n      show_root_heading: false\n"]
    for name, path, is_module in _public(package_name):
        owner = _owner.get(path, package_name)
        if owner != package_name or path in on_page:  # e.g. a network's MODEL, the class itself
            blocks.append(f"## `{name}`\n\n[`{path}`][{path}], documented with `{owner}`.\n")
            continue
        on_page.add(path)
        options = "      members: false\n" if is_module else ""
        blocks.append(f"::: {path}\n    options:\n      heading: {name}\n      toc_label: {name}\n{options}")
    return "\n".join(blocks)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    on_page: set[str] = set()
    return _DIRECTIVE.sub(lambda match: api_blocks(match["package"], on_page), _expand_networks(markdown))
