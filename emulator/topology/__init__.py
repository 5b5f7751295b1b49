"""The topology: frozen data describing MC systems, the local PLMN, UEs and links."""

from .loader import TopologyError, load_topology, parse_topology
from .model import (
    LocalPlmn,
    McSystem,
    MigrationProfileSpec,
    Node,
    SipInterface,
    Topology,
    UeSpec,
    UserSpec,
)

__all__ = [
    "LocalPlmn", "McSystem", "MigrationProfileSpec", "Node", "SipInterface", "Topology",
    "TopologyError", "UeSpec", "UserSpec", "load_topology", "parse_topology",
]
