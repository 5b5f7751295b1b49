"""A SIP registrar (RFC 3261 §10.3) with Path support (RFC 3327).

This is the minimal registrar of the foundation issue: it binds Contacts,
answers 200 with every current binding, 423 with Min-Expires, 420 for
unsupported extensions, and stores and echoes Path.  The MC-specific SIP
core (Service-Route, third-party REGISTER) builds on it.
"""

from __future__ import annotations

import logging
from email.utils import formatdate

from emulator.sip.events import RequestReceived, ResponseReceived
from emulator.sip.headers import Contact
from emulator.sip.message import Request, Response
from emulator.transport.endpoint import SipEndpoint

from .location import LocationService, RegistrarPolicy, RegistrationRefused

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = frozenset({"path"})


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
        # §10.3 step 1: only our own domains.
        if request.uri.host.lower() not in self.domains:
            return request.make_response(404, "Not Found (domain not served here)", to_tag=tag)
        # §10.3 step 2 / §8.2.2.3: every Require tag must be understood.
        unsupported = request.option_tags("Require") - SUPPORTED_EXTENSIONS
        if unsupported:
            response = request.make_response(420, to_tag=tag)
            response.headers.add("Unsupported", ", ".join(sorted(unsupported)))
            return response
        try:
            aor = request.to.uri.aor  # §10.3 step 5: the AOR is the To URI
            contacts = request.contacts
            header_expires = request.expires
        except ValueError as exc:
            return request.make_response(400, f"Bad Request ({exc})", to_tag=tag)
        if request.to.uri.host.lower() not in self.domains:
            return request.make_response(404, "Not Found (AOR not in this domain)", to_tag=tag)
        path: tuple[str, ...] = ()
        if "path" in request.option_tags("Supported"):
            path = tuple(request.headers.values("Path"))
        try:
            if contacts:
                bindings = self.location.update(
                    aor, contacts, header_expires=header_expires, call_id=request.call_id,
                    cseq=request.cseq.seq, now=now, path=path)
            else:
                bindings = self.location.lookup(aor, now=now)  # §10.3 step 6: a query
        except RegistrationRefused as refused:
            response = request.make_response(refused.status, refused.reason, to_tag=tag)
            for name, value in refused.headers:
                response.headers.add(name, value)
            return response
        self.registrations += 1
        response = request.make_response(200, to_tag=tag)
        for binding in bindings:
            contact = binding.contact.address
            assert contact is not None
            bound = Contact(contact.with_param("expires", str(binding.remaining(now))))
            response.headers.add("Contact", bound)
        if path:  # RFC 3327 §5.3: echo the Path vector
            for value in path:
                response.headers.add("Path", value)
        response.headers.add("Date", formatdate(usegmt=True))
        return response

    def _now(self) -> float:
        assert self.endpoint is not None
        return self.endpoint.now()
