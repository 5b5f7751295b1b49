"""The topologies shipped inside the package (``emulator/topologies/*.yaml``).

They are package data, so an installed wheel finds them as a checkout does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_topologies() -> dict[str, Path]:
    """Name -> file of every shipped topology."""
    folder = resources.files("emulator") / "topologies"
    return {Path(item.name).stem: Path(str(item)) for item in folder.iterdir()
            if item.name.endswith(".yaml")}


def topology_path(name_or_path: str | Path) -> Path:
    """A topology file: an existing path as given, else the shipped topology of that name."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = bundled_topologies()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    return path  # the loader reports it missing, naming the path


DEFAULT_TOPOLOGY = topology_path("default")
"""The seed's topology (TR 23.700-90 solution 7.X)."""
