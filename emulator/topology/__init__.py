"""The topology: frozen data describing MC systems, the local PLMN, UEs and links.

Loaded and validated in one place (:func:`load_topology`); the shipped
topologies are package data (:func:`topology_path`).
"""

from .bundled import DEFAULT_TOPOLOGY
from .bundled import bundled_topologies
from .bundled import topology_path
from .loader import ImpairmentError
from .loader import TopologyError
from .loader import load_topology
from .loader import parse_impairment
from .loader import parse_topology
from .model import ConnectionLimits
from .model import ExecSpec
from .model import FloodLimit
from .model import Impairment
from .model import Limits
from .model import Link
from .model import LocalPlmn
from .model import LoginLimit
from .model import McSystem
from .model import MigrationProfileSpec
from .model import Node
from .model import SipInterface
from .model import Topology
from .model import UeSpec
from .model import UserSpec

__all__ = [
    "DEFAULT_TOPOLOGY", "ConnectionLimits", "ExecSpec", "FloodLimit", "Impairment",
    "ImpairmentError", "Limits", "Link", "LocalPlmn", "LoginLimit", "McSystem",
    "MigrationProfileSpec", "Node", "SipInterface", "Topology", "TopologyError", "UeSpec",
    "UserSpec", "bundled_topologies", "load_topology", "parse_impairment", "parse_topology",
    "topology_path",
]
