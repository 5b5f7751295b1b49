"""The dependency runs one way: cores <- I/O <- roles <- orchestration <- CLI.

The cores open no socket and know no role; the SIP, identity, documents and
topology model ones are strictly sans-IO (``tests/sip/test_sans_io.py``),
while the capture one reads and writes capture files and runs tcpdump and
tshark.

Read from the source with :mod:`ast`, so an import hidden in a function body
counts too.  A module may import its own layer and the layers below; every
module of the project must belong to a layer, so a new package has to be
placed here on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import imported_names
from tests.support.imports import module_name

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cores", ("emulator.sip", "emulator.identity", "emulator.topology",
               "emulator.documents", "emulator.capture", "emulator.refusal", "emulator.expiry",
               "emulator.process")),
    ("I/O: sockets and files", ("emulator.transport", "emulator.keystore")),
    ("roles", ("nodes",)),
    ("orchestration", ("emulator.orchestration",)),
    ("CLI", ("emulator.cli", "run_topology")),
]
PROJECT = ("emulator", "nodes", "run_topology")


def layer_of(name: str) -> int | None:
    """The layer index of a project module name (the longest matching prefix), else None."""
    if name == "emulator":  # the package itself holds only its version
        return 0
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and \
                    (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def modules(root: Path = ROOT) -> list[Path]:
    found = [root / "run_topology.py"]
    for package in ("emulator", "nodes"):
        found += sorted((root / package).rglob("*.py"))
    return found


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """Imports of ``path`` that run against the layering, or reach an unplaced module."""
    own = layer_of(module_name(path, root))
    if own is None:
        return [f"{module_name(path, root)} belongs to no layer"]
    found = []
    for line, name in imported_names(path, root):
        if not is_project(name):
            continue
        layer = layer_of(name)
        if layer is None:
            found.append(f"line {line}: {name} belongs to no layer")
        elif layer > own:
            found.append(f"line {line}: {LAYERS[own][0]} imports {name} ({LAYERS[layer][0]})")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path: Path) -> None:
    assert violations(path) == []


def test_every_layer_is_populated() -> None:
    placed = {layer_of(module_name(path, ROOT)) for path in modules()}
    assert placed == set(range(len(LAYERS)))


@pytest.mark.parametrize("source,layer,bad", [
    ("from emulator.orchestration import Network\n", "nodes", True),
    ("def f():\n    from emulator.orchestration.runner import run_nodes\n", "nodes", True),
    ("from emulator import orchestration\n", "nodes", True),
    ("from nodes import build\n", "emulator/transport", True),
    ("from ..orchestration import plan\n", "emulator/sip", True),
    ("import emulator.cli\n", "emulator/orchestration", True),
    ("from emulator.newthing import x\n", "nodes", True),
    ("from emulator.sip import Request\nfrom .base import Node\n", "nodes", False),
    ("from nodes import build\nfrom emulator.capture import publish\n",
     "emulator/orchestration", False),
])
def test_the_checker_catches_an_upward_import(tmp_path: Path, source: str, layer: str,
                                              bad: bool) -> None:
    """A role importing the orchestration (and the like) is caught, however it is written."""
    package = tmp_path.joinpath(*layer.split("/"))
    package.mkdir(parents=True)
    probe = package / "probe.py"
    probe.write_text(source)
    assert bool(violations(probe, tmp_path)) is bad, violations(probe, tmp_path)


def test_the_orchestration_package_serves_every_name_it_lists_lazily() -> None:
    """``emulator.orchestration`` loads its names on first use (PEP 562): its list of
    where each lives must name exactly what it exports, and each must load."""
    import emulator.orchestration as orchestration

    where = orchestration._WHERE  # type: ignore[attr-defined]
    assert sorted(where) == sorted(orchestration.__all__)
    for name in orchestration.__all__:
        assert getattr(orchestration, name) is not None
    with pytest.raises(AttributeError):
        orchestration.no_such_name  # noqa: B018
