"""What every role shares: the :class:`Node` interface and loading what its plan names.

A role is built from its :class:`~nodes.plan.NodePlan` and shows the
runner four things: ``start()`` opens its sockets, ``ready()`` returns once
it serves, ``stop()`` closes everything, and ``state()`` reports what it
is (its real listening ports, and role-specific counters) as JSON data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path
from typing import Any
from typing import Protocol
from typing import runtime_checkable

from emulator.identity.tokens import VERIFIED_TOKENS
from emulator.identity.tokens import TokenValidator
from emulator.identity.trust import verification_key
from emulator.keystore import read_certificate
from emulator.transport.tls import client_context
from emulator.transport.tls import server_context

from .plan import Credentials
from .plan import NodePlan


@runtime_checkable
class Node(Protocol):
    """A running role, whatever its placement."""

    plan: NodePlan

    async def start(self) -> None: ...

    async def ready(self) -> None: ...

    async def stop(self) -> None: ...

    def state(self) -> dict[str, Any]: ...


class Readiness:
    """``ready()`` for roles that serve as soon as ``start()`` has opened their sockets."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()

    def _mark_ready(self) -> None:
        self._ready.set()

    async def ready(self) -> None:
        await self._ready.wait()


def describe(plan: NodePlan, listening: list[tuple[str, str, int]]) -> dict[str, Any]:
    """The part of ``state()`` every role has: who it is and where it really listens."""
    return {"name": plan.name, "role": plan.role, "system": plan.system,
            "listeners": [{"protocol": p, "host": h, "port": port} for p, h, port in listening]}


def tls_server(credentials: Credentials) -> ssl.SSLContext | None:
    """The node's TLS server context, when its plan gives it a certificate."""
    if credentials.tls_certificate is None or credentials.tls_key is None:
        return None
    return server_context(credentials.tls_certificate, credentials.tls_key,
                          keylog=credentials.keylog)


def tls_client(credentials: Credentials) -> ssl.SSLContext | None:
    """A verifying TLS client trusting the plan's CAs (None: the node connects to no TLS)."""
    if not credentials.trusted_cas:
        return None
    return client_context([Path(path).read_bytes() for path in credentials.trusted_cas],
                          keylog=credentials.keylog)


def own_token_validator(issuer: str, credentials: Credentials, *,
                        remembered: int = VERIFIED_TOKENS) -> TokenValidator:
    """A validator for the own IdMS's tokens: its signing certificate under the own CA, the
    chain checked at the wall clock now.  A plan naming neither trusts no token at all.
    ``remembered``: how many signature checks it keeps (``TokenValidator``)."""
    if credentials.signing_certificate is None or credentials.system_ca is None:
        return TokenValidator([], remembered=remembered)
    key = verification_key(issuer, read_certificate(credentials.signing_certificate),
                           [read_certificate(credentials.system_ca)],
                           now=dt.datetime.now(dt.UTC))
    return TokenValidator([key], remembered=remembered)
