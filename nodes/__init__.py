"""The roles of the emulator, each built from a :class:`NodePlan`.

UE, local PLMN gateway (P-CSCF), SIP core, MC server, IdMS and CMS, with
what they share (:mod:`nodes.base`, :mod:`nodes.sipnode`, :mod:`nodes.httpd`).
:func:`build` makes the role a plan names; the orchestration
(``emulator.orchestration``) decides where and when it runs.
"""

from __future__ import annotations

from emulator.transport.base import Tap

from .base import Node
from .cms import CmsNode
from .gateway import Gateway
from .gms import GmsNode
from .idm_client import IdmClient
from .idm_client import Tokens
from .idms import IdmsNode
from .mc_server import McServer
from .plan import Account
from .plan import CmsOptions
from .plan import Credentials
from .plan import ExecOptions
from .plan import GatewayOptions
from .plan import GmsOptions
from .plan import IdmsOptions
from .plan import Impaired
from .plan import Listener
from .plan import McServerOptions
from .plan import NodePlan
from .plan import Peer
from .plan import SipCoreOptions
from .plan import UeOptions
from .plan import mc_service_psi
from .plan import mcptt_server_psi
from .sip_core import SipCore
from .ue import CallRecord
from .ue import McClient
from .ue import Received
from .ue import Registration
from .ue import SipOutcome
from .ue import UserEquipment

__all__ = [
    "Account", "CallRecord", "CmsNode", "CmsOptions", "Credentials", "ExecOptions", "Gateway",
    "GatewayOptions", "GmsNode", "GmsOptions",
    "IdmClient", "IdmsNode", "IdmsOptions", "Impaired", "Listener", "McClient", "McServer",
    "McServerOptions", "Node", "NodePlan", "Peer", "Received", "Registration", "SipCore",
    "SipCoreOptions", "SipOutcome", "Tokens", "UeOptions", "UserEquipment", "build",
    "mc_service_psi", "mcptt_server_psi",
]


def build(plan: NodePlan, *, tap: Tap | None = None) -> Node:
    """The role ``plan`` describes, not yet started.

    ``tap`` sees every SIP message the node sends or receives (the
    application-level capture); HTTPS roles have no SIP to show it.
    """
    if plan.role == "idms":
        return IdmsNode(plan)
    if plan.role == "cms":
        return CmsNode(plan)
    if plan.role == "gms":
        return GmsNode(plan)
    if plan.role == "mc-server":
        return McServer(plan, tap=tap)
    if plan.role == "sip-core":
        return SipCore(plan, tap=tap)
    if plan.role == "gateway":
        return Gateway(plan, tap=tap)
    if plan.role == "ue":
        return UserEquipment(plan, tap=tap)
    raise ValueError(f"{plan.name}: a {plan.role} is an outside program; the supervisor runs "
                     "its command (emulator.orchestration.execnode)")
