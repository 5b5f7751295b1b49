"""A minimal SIP user agent: registers, refreshes, unregisters (RFC 3261 §10.2).

Keeps one Call-ID per registrar and increments CSeq for each REGISTER, as
§10.2.4 asks, so a registrar can order refreshes.  The MC service client of
the scenario builds on it.
"""

from __future__ import annotations

import logging
import secrets

from emulator.sip.events import Address, RequestReceived, ResponseReceived
from emulator.sip.headers import Contact, Headers, NameAddress
from emulator.sip.message import Request, Response
from emulator.sip.uri import URI
from emulator.transport.endpoint import SipEndpoint

logger = logging.getLogger(__name__)


class UserAgent:
    """A UA bound to one public identity (``aor``)."""

    def __init__(self, name: str, aor: str, *, display_name: str | None = None,
                 user_agent: str = "mcx-emulator") -> None:
        self.name = name
        self.aor = URI.parse(aor)
        self.display_name = display_name
        self.user_agent = user_agent
        self.endpoint: SipEndpoint | None = None
        self.received: list[Request] = []
        self._call_ids: dict[Address, str] = {}
        self._cseq = 0
        self._tag = secrets.token_hex(4)

    def attach(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<UserAgent {self.name} {self.aor}>"

    def contact_uri(self, transport: str) -> URI:
        assert self.endpoint is not None
        local = self.endpoint.local(transport)
        params: tuple[tuple[str, str | None], ...] = ()
        if transport != "udp":
            params = (("transport", transport),)
        return URI("sip", user=self.aor.user, host=local.host, port=local.port, params=params)

    def build_register(self, registrar: Address, *, expires: int = 600,
                       contact_params: tuple[tuple[str, str | None], ...] = (),
                       body: bytes = b"", content_type: str | None = None,
                       extra_headers: tuple[tuple[str, str], ...] = ()) -> Request:
        """A REGISTER for this UA's AOR (§10.2), ready to send to ``registrar``."""
        assert self.endpoint is not None
        transport = registrar.transport
        call_id = self._call_ids.setdefault(
            registrar, f"{secrets.token_hex(8)}@{self.endpoint.local(transport).host}")
        self._cseq += 1
        headers = Headers()
        headers.add("Via", self.endpoint.make_via(transport))
        headers.add("Max-Forwards", 70)
        identity = NameAddress.build(self.aor, self.display_name)
        headers.add("From", identity.with_tag(self._tag))
        headers.add("To", identity)
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        contact = NameAddress(self.contact_uri(transport), None, contact_params)
        headers.add("Contact", Contact(contact))
        headers.add("Expires", expires)
        headers.add("Supported", "path")
        headers.add("User-Agent", self.user_agent)
        for name, value in extra_headers:
            headers.add(name, value)
        request = Request("REGISTER", URI("sip", host=self.aor.host), headers)
        request.set_body(body, content_type)
        return request

    async def register(self, registrar: Address, **kwargs: object) -> Response:
        """Send a REGISTER and return the final response (408/503 built locally on failure)."""
        assert self.endpoint is not None
        request = self.build_register(registrar, **kwargs)  # type: ignore[arg-type]
        return await self.endpoint.request(request, registrar)

    async def unregister(self, registrar: Address) -> Response:
        return await self.register(registrar, expires=0)

    # -- TransactionUser -------------------------------------------------------
    def request_received(self, event: RequestReceived) -> None:
        request = event.request
        if request.method == "ACK":
            return
        self.received.append(request)
        assert self.endpoint is not None
        status = 200 if request.method in ("OPTIONS", "MESSAGE") else 405
        response = request.make_response(status, to_tag=self._tag)
        if status == 405:
            response.headers.add("Allow", "OPTIONS, MESSAGE")
        self.endpoint.send_response(response, event.transaction)

    def response_received(self, event: ResponseReceived) -> None:
        logger.debug("%s: stray response %r", self.name, event.response)
