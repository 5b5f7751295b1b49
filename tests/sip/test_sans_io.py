"""The SIP core and the identity code stay sans-IO: no clocks, sockets, threads or event loops.

Checked statically with :mod:`ast`, so a forbidden import hidden in a function
body is caught as well as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import emulator

PACKAGE_ROOT = Path(emulator.__file__).resolve().parent
SANS_IO_PACKAGES = ["sip", "identity"]

FORBIDDEN_MODULES = {"asyncio", "socket", "time", "scapy", "selectors", "ssl", "threading"}
FORBIDDEN_PACKAGES = ("emulator.transport", "nodes")


def _modules() -> list[Path]:
    found: list[Path] = []
    for package in SANS_IO_PACKAGES:
        found.extend(sorted((PACKAGE_ROOT / package).rglob("*.py")))
    return found


def _imports(path: Path, root: Path = PACKAGE_ROOT) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved).

    ``root`` is the directory of the top-level package, to name ``path``'s package.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root.parent).parts[:-1])
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            # "from emulator import transport" imports emulator.transport.
            names.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.append((node.lineno, node.args[0].value))
    return names


def _forbidden(name: str) -> bool:
    top = name.split(".")[0]
    if top in FORBIDDEN_MODULES:
        return True
    return any(name == p or name.startswith(p + ".") for p in FORBIDDEN_PACKAGES)


def test_the_sip_package_is_found() -> None:
    names = {p.name for p in _modules()}
    assert {"message.py", "transaction.py", "framing.py", "uri.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_module_is_sans_io(path: Path) -> None:
    offending = [(line, name) for line, name in _imports(path) if _forbidden(name)]
    assert offending == [], f"{path.name} imports I/O: {offending}"


def test_the_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    """The detector itself must see plain, from-, relative and nested imports."""
    pkg = tmp_path / "emulator" / "sip"
    pkg.mkdir(parents=True)
    cases = {
        "import time\n": True,
        "import asyncio.events\n": True,
        "from socket import socket\n": True,
        "def f():\n    import threading\n": True,
        "from ..transport import udp\n": True,
        "from .. import transport\n": True,
        "from emulator import transport\n": True,
        "from nodes.registrar import Registrar\n": True,
        "x = __import__('ssl')\n": True,
        "from scapy.all import IP\n": True,
        "import heapq\nfrom .message import Request\nimport timeit\n": False,
        "from emulator.sip.timers import TimerConfig\n": False,
    }
    for source, bad in cases.items():
        module = pkg / "probe.py"
        module.write_text(source)
        names = _imports(module, tmp_path / "emulator")
        assert any(_forbidden(name) for _, name in names) is bad, (source, names)
