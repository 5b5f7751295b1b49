"""What a module imports, read with :mod:`ast` (never by importing it).

Shared by the sans-IO test and the layering test: plain, from-, relative
and nested imports, and ``__import__('name')`` calls, all as absolute names.
"""

from __future__ import annotations

import ast
from pathlib import Path


def imported_names(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``.

    ``root`` is the directory holding the top-level packages, to name
    ``path``'s own package and resolve relative imports.  ``from a import b``
    gives both ``a`` and ``a.b``, since ``b`` may be a module.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).parts[:-1])
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            names.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.append((node.lineno, node.args[0].value))
    return names


def module_name(path: Path, root: Path) -> str:
    """``emulator/sip/message.py`` -> ``emulator.sip.message`` (``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)
