"""The cores stay sans-IO: no clocks, sockets, threads or event loops in the SIP core, the
identity code, the MC documents, the topology model and the refusal type.

Checked statically with :mod:`ast`, so a forbidden import hidden in a function
body is caught as well as one at the top of a module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import emulator
from tests.support.imports import imported_names

PACKAGE_ROOT = Path(emulator.__file__).resolve().parent
SANS_IO = ["sip", "identity", "documents", "topology", "refusal.py", "expiry.py"]

FORBIDDEN_MODULES = {"asyncio", "socket", "time", "scapy", "selectors", "ssl", "threading"}
FORBIDDEN_PACKAGES = ("emulator.transport", "nodes")


def _modules() -> list[Path]:
    found: list[Path] = []
    for name in SANS_IO:
        path = PACKAGE_ROOT / name
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


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
    offending = [(line, name) for line, name in imported_names(path, PACKAGE_ROOT.parent)
                 if _forbidden(name)]
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
        "from nodes.sip_core import SipCore\n": True,
        "x = __import__('ssl')\n": True,
        "from scapy.all import IP\n": True,
        "import heapq\nfrom .message import Request\nimport timeit\n": False,
        "from emulator.sip.timers import TimerConfig\n": False,
    }
    for source, bad in cases.items():
        module = pkg / "probe.py"
        module.write_text(source)
        names = imported_names(module, tmp_path)
        assert any(_forbidden(name) for _, name in names) is bad, (source, names)
