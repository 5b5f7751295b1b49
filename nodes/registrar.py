"""A SIP registrar (RFC 3261 §10.3) with Path support (RFC 3327).

This is the minimal registrar of the foundation issue: it binds Contacts,
answers 200 with every current binding, 423 with Min-Expires, 420 for
unsupported extensions, and stores and echoes Path.  The MC-specific SIP
core (Service-Route, third-party REGISTER) builds on it.
"""

from __future__ import annotations

import logging

from emulator.sip.events import RequestReceived, ResponseReceived
from emulator.sip.message import Request, Response
from emulator.transport.endpoint import SipEndpoint

from .location import LocationService, RegistrarPolicy
from .registration import SUPPORTED_EXTENSIONS, process_register, registered_response

logger = logging.getLogger(__name__)


class Registrar:
    """Transaction user that answers REGISTER and OPTIONS for its domains."""

    def __init__(self, name: str, domains: set[str], *,
                 policy: RegistrarPolicy | None = None) -> None:
        self.name = name
        self.domains = {d.lower() for d in domains}
        self.location = LocationService(policy or RegistrarPolicy())
        self.endpoint: SipEndpoint | None = None
        self.registrations = 0

    def attach(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<Registrar {self.name} aors={self.location.aor_count}>"

    # -- TransactionUser -------------------------------------------------------
    def request_received(self, event: RequestReceived) -> None:
        request = event.request
        if request.method == "ACK":
            return
        response = self.handle(request, now=self._now())
        assert self.endpoint is not None
        self.endpoint.send_response(response, event.transaction)

    def response_received(self, event: ResponseReceived) -> None:
        logger.debug("%s: stray response %r", self.name, event.response)

    # -- logic ---------------------------------------------------------------
    def handle(self, request: Request, *, now: float) -> Response:
        """The response to ``request`` (pure: no I/O, ``now`` injected)."""
        tag = f"{self.name}-{abs(hash(request.call_id)) % 10**8}"
        if request.method == "OPTIONS":
            response = request.make_response(200, to_tag=tag)
            response.headers.add("Allow", "REGISTER, OPTIONS")
            response.headers.add("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS)))
            return response
        if request.method != "REGISTER":
            response = request.make_response(405, to_tag=tag)
            response.headers.add("Allow", "REGISTER, OPTIONS")
            return response
        outcome = process_register(request, domains=self.domains, location=self.location,
                                   now=now, to_tag=tag)
        if isinstance(outcome, Response):
            return outcome
        self.registrations += 1
        return registered_response(request, outcome, now=now, to_tag=tag)

    def _now(self) -> float:
        assert self.endpoint is not None
        return self.endpoint.now()
