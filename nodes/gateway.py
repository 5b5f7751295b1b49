"""The local PLMN gateway: attach over HTTPS, and the P-CSCF role for SIP.

Attach (project-defined, documented in the README)::

    POST /attach   {"ue": "<name>"}            ->  {"ue_address": "127.0.31.1",
                                                     "plmn_id": "001-02",
                                                     "p_cscf": {"host": ..., "port": ...,
                                                                "transports": [...]}}
    DELETE /attach/<address>                   ->  {"detached": "<address>"}

P-CSCF (24.229 §5.2, spec digest §7.3):

* SIP from an address that is not attached is refused (403);
* REGISTER towards the served SIP core: ``Path: <sip:term@gw;lr>`` with
  ``Require: path`` (RFC 3327), ``P-Visited-Network-ID``,
  ``P-Charging-Vector`` with a fresh ``icid-value`` (RFC 7315), and
  ``Security-Client`` / sec-agree option tags stripped (no IPsec here);
* the 200's ``Service-Route`` and ``P-Associated-URI`` are stored per UE;
* later requests from the UE get ``P-Asserted-Identity`` (the registered
  identity; ``P-Preferred-Identity`` is honoured only if it is one of the
  associated URIs) and the stored Service-Route as their Route set;
* after a UE's registration it subscribes to the UE's reg event (24.229
  §5.2.3, RFC 3680), and a NOTIFY that ends the registration (the user's
  de-REGISTER or the network's) ends what it holds for the UE (§5.2.3.2).

The gateway knows one SIP core, the one of the system it serves; it has no
route to any other MC system.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from dataclasses import field

from aiohttp import web

from emulator.documents import reginfo
from emulator.documents.xmlsafe import XmlError
from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_request
from emulator.sip.builder import random_hex
from emulator.sip.dialog import Dialog
from emulator.sip.errors import RemoteProtocolError
from emulator.sip.events import Address
from emulator.sip.events import TransactionKey
from emulator.sip.headers import NameAddress
from emulator.sip.headers import shared_strings
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.message import parse_message
from emulator.transport.base import Tap

from .base import describe
from .base import tls_client
from .base import tls_server
from .flood import SourcePolicer
from .flood import Verdict
from .httpd import HttpsServer
from .httpd import json_response
from .httpd import new_application
from .journal import Tables
from .plan import GatewayOptions
from .plan import NodePlan
from .sipnode import SipNode

logger = logging.getLogger(__name__)

STATE_ROWS = 256
"""Attachments listed in ``state()`` (all are counted)."""
SEC_AGREE_HEADERS = ("Security-Client", "Security-Verify")


@dataclass(slots=True)
class UeContext:
    """What the gateway knows of one attached UE."""

    name: str
    address: str
    registered: bool = False
    service_route: tuple[str, ...] = ()
    associated: tuple[str, ...] = ()
    requests: int = field(default=0)
    reg_subscription: Dialog | None = None
    """The gateway's own reg-event subscription for this UE (24.229 §5.2.3)."""
    subscribed_call_id: str | None = None
    """The Call-ID of the latest such subscription, live or not (the index's key)."""


class Gateway(SipNode):
    """A local PLMN gateway acting as P-CSCF towards its plan's ``sip-core`` peer."""

    def __init__(self, plan: NodePlan, *, tap: Tap | None = None) -> None:
        options = plan.options
        assert isinstance(options, GatewayOptions)
        https = plan.listener("https")
        # Where SIP for the served system goes: its edge proxy, or else its SIP core.
        core = plan.peer("edge-proxy") or plan.peer("sip-core")
        if https is None or core is None:
            raise ValueError(f"{plan.name}: a gateway needs an https listener and a sip-core "
                             "(or edge-proxy) peer")
        server_ssl = tls_server(plan.credentials)
        super().__init__(plan.name, plan.host, plan.sip_listeners, tap=tap,
                         server_ssl=server_ssl, client_ssl=tls_client(plan.credentials),
                         **self.planned(plan))
        self.plan = plan
        self.plmn = options.plmn
        self.plmn_id = options.plmn_id
        self.core = core.address
        self.attached: dict[str, UeContext] = {}
        """By address: what each request's source is checked against."""
        self._by_name: dict[str, UeContext] = {}
        self._by_subscription: dict[str, UeContext] = {}
        """By the Call-ID of our reg-event subscription: whose NOTIFY it is."""
        self.policer = SourcePolicer(options.flood)
        self.endpoint.screen = self._screen
        self._pool = frozenset(options.ue_pool)
        self._free = deque(options.ue_pool)
        """Addresses nobody holds, taken from the left and given back on the right."""
        app = new_application()
        app.router.add_post("/attach", self._attach)
        app.router.add_delete("/attach/{address}", self._detach)
        self.http = HttpsServer(self.name, app, https.host, https.port, server_ssl,
                                plan.connection_limits)

    async def start(self) -> None:
        await super().start()  # the kept attachments first: no attach may take their address
        await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()
        await super().stop()

    def state(self) -> dict[str, object]:
        listening = [*self.sip_state(), ("https", self.http.host, self.http.port)]
        return {**describe(self.plan, listening),
                "attachments": len(self.attached),
                "flood": {"sources": len(self.policer), "refused": self.policer.refused,
                          "dropped": self.policer.dropped},
                "guards": {**self.endpoint.guard_state(), "https": self.http.guard_state()},
                "overload": self.overload.state(),
                # Listed only while short: every control-link answer carries the state.
                "attached": {c.address: c.name for c in itertools.islice(
                    self.attached.values(), STATE_ROWS)},
                "restored": self.journal.restored}

    # -- what survives a restart (the attachments and what each UE registered) ----------
    def recover(self, tables: Tables) -> None:
        for address, row in tables.get("attached", {}).items():
            if address not in self._pool or address in self.attached:
                logger.warning("%s: kept attachment %s is not in the pool (or kept twice)",
                               self.name, address)
                continue
            try:
                context = UeContext(row["name"], address, bool(row["registered"]),
                                    shared_strings(row["service_route"]),
                                    tuple(row["associated"]))
            except (KeyError, TypeError) as exc:
                logger.warning("%s: kept attachment %s unusable: %s", self.name, address, exc)
                continue
            self._hold(context)
        self._free = deque(a for a in self._free if a not in self.attached)

    def _hold(self, context: UeContext) -> None:
        self.attached[context.address] = context
        self._by_name[context.name] = context
        # The link to this UE, impaired as planned or since, now ends at its new address.
        if self.impaired.get(context.name) is not None:
            self.endpoint.impairer.set(context.address, self.impaired[context.name])
        self.keep(context)

    def keep(self, context: UeContext) -> None:
        self.journal.put("attached", context.address, {
            "name": context.name, "registered": context.registered,
            "service_route": list(context.service_route),
            "associated": list(context.associated)})

    # -- attach ----------------------------------------------------------------
    REMOTE_CALLS = SipNode.REMOTE_CALLS | {"allocate"}

    def allocate(self, ue: str) -> str:
        """The address ``ue`` has, or gets, in the local PLMN: what the radio attach of a
        namespaced UE plugs in before the UE's own attach confirms it."""
        return self.attach(ue).address

    def attach(self, ue: str) -> UeContext:
        context = self._by_name.get(ue)
        if context is not None:
            return context  # re-attach keeps the address
        if not self._free:
            raise LookupError(f"address pool exhausted: all {len(self._pool)} addresses "
                              "are attached")
        context = UeContext(ue, self._free.popleft())
        self._hold(context)
        logger.info("%s: %s attached as %s", self.name, ue, context.address)
        return context

    async def _attach(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return json_response({"error": "invalid_request",
                                  "error_description": "body must be JSON"}, 400)
        ue = body.get("ue") if isinstance(body, dict) else None
        if not isinstance(ue, str) or not ue or len(ue) > 64:
            return json_response({"error": "invalid_request",
                                  "error_description": "'ue' (the UE's name) is required"}, 400)
        try:
            context = self.attach(ue)
        except LookupError as exc:
            return json_response({"error": "unavailable", "error_description": str(exc)}, 503)
        sip = {address.transport: address.port for address in self.endpoint.addresses}
        return json_response({
            "ue_address": context.address, "plmn_id": self.plmn_id,
            "p_cscf": {"host": self.host, "port": sip.get("udp", sip.get("tcp")),
                       "tls_port": sip.get("tls"), "transports": list(sip)}})

    async def _detach(self, request: web.Request) -> web.Response:
        context = self.attached.pop(request.match_info["address"], None)
        if context is None:
            return json_response({"error": "not_found",
                                  "error_description": "no UE attached at that address"}, 404)
        self._by_name.pop(context.name, None)
        if context.subscribed_call_id is not None:
            self._by_subscription.pop(context.subscribed_call_id, None)
        self._free.append(context.address)
        self.journal.delete("attached", context.address)
        self.endpoint.impairer.set(context.address, None)
        # The address is given back: the flows it opened end with it (the next holder
        # opens its own), as the accept-time check would refuse them now.
        self.endpoint.disconnect(context.address)
        return json_response({"detached": context.address})

    # -- SIP ---------------------------------------------------------------------
    def _screen(self, data: bytes, source: Address) -> bool:
        """Flood control, before any parsing: each source but the core has its bucket."""
        if source.host == self.core.host:
            return True
        verdict = self.policer.check(source.host, self.endpoint.now())
        if verdict is Verdict.PASS:
            return True
        if verdict is Verdict.REFUSE:
            self._refuse_flood(data, source)
        return False

    def _refuse_flood(self, data: bytes, source: Address) -> None:
        """503 with Retry-After (RFC 3261 §21.5.4), statelessly: a flood gets no
        transaction.  Sent back where it came from (RFC 3581 symmetric response)."""
        try:
            message = parse_message(data, stream=source.transport != "udp")
            if not isinstance(message, Request) or message.method == "ACK":
                return
            response = message.make_response(503, "Service Unavailable (rate limit)")
        except (RemoteProtocolError, ValueError):  # malformed: dropped like the rest
            return
        response.headers.add("Retry-After", str(self.policer.limit.retry_after))
        self.endpoint.send_stateless(response, source)

    def admits_connection(self, host: str) -> bool:
        """TCP/TLS only from attached UEs and the core, decided at accept time: an
        unattached host costs neither a TLS handshake nor a parse, nor a descriptor."""
        return host in self.attached or host == self.core.host

    def from_core(self, source: Address) -> bool:
        return source.host == self.core.host

    def on_request(self, request: Request, source: Address,
                   transaction: TransactionKey | None) -> None:
        assert transaction is not None
        if request.method == "NOTIFY" and request.to.tag is not None:
            # Ours, from the registrar (which may sit behind an edge proxy)?
            context = self._subscriber(request)
            if context is not None:
                self.on_reg_notify(request, context, transaction)
                return
        if self.from_core(source):
            self.terminating(request, transaction)
            return
        context = self.attached.get(source.host)
        if context is None:
            self.reply(request, transaction, 403, f"Forbidden (not attached to {self.plmn})")
            return
        context.requests += 1
        if request.method == "REGISTER":
            self.register(request, context, transaction)
        else:
            self.originating(request, context, transaction)

    def on_ack(self, request: Request, source: Address) -> None:
        if not self.from_core(source) and source.host not in self.attached:
            return  # not attached: dropped, ACK gets no answer
        super().on_ack(request, source)

    def register(self, request: Request, context: UeContext, transaction: TransactionKey
                 ) -> None:
        headers = request.headers
        for name in SEC_AGREE_HEADERS:
            headers.remove(name)
        for name in ("Require", "Proxy-Require"):
            tags = [t for t in headers.values(name) if t.lower() != "sec-agree"]
            headers.remove(name)
            if tags:
                headers.add(name, ", ".join(tags))
        headers.prepend("Path", NameAddress(self.uri("term", transport=self.core.transport)))
        require = set(request.option_tags("Require")) | {"path"}
        headers.set("Require", ", ".join(sorted(require)))
        headers.add("P-Visited-Network-ID", f'"{self.plmn}"')
        headers.add("P-Charging-Vector", f"icid-value={random_hex(12)};"
                                         f"icid-generated-at={self.host}")

        def on_final(response: Response) -> Response:
            # Detached meanwhile (its address maybe another UE's now): relayed, not kept.
            if response.status == 200 and self.attached.get(context.address) is context:
                kept = (context.registered, context.service_route, context.associated)
                try:
                    context.registered = bool(response.contacts)
                    # Shared: the registrar gives every UE the same route.
                    context.service_route = shared_strings(
                        response.headers.values("Service-Route"))
                    context.associated = tuple(
                        NameAddress.parse(v).uri.aor
                        for v in response.headers.values("P-Associated-URI"))
                except ValueError as exc:
                    logger.warning("%s: unusable 200 to REGISTER: %s", self.name, exc)
                    context.registered = False
                if (context.registered, context.service_route, context.associated) != kept:
                    self.keep(context)  # a refresh that changes nothing writes nothing
                if context.registered and context.reg_subscription is None and \
                        context.associated:
                    # After the 200 is relayed: the UE hears first (§5.2.3).
                    asyncio.get_running_loop().call_soon(self.subscribe_reg, context)
            return response

        self.forward(request, transaction, self.core, on_final=on_final)

    # -- reg event (24.229 §5.2.3) ------------------------------------------------
    def _subscriber(self, request: Request) -> UeContext | None:
        context = self._by_subscription.get(request.call_id)
        dialog = context.reg_subscription if context is not None else None
        if dialog is not None and dialog.local.tag == request.to.tag:
            return context
        return None

    def subscribe_reg(self, context: UeContext) -> None:
        """SUBSCRIBE to the UE's registration at the registrar, on the UE's behalf."""
        if context.reg_subscription is not None or self.attached.get(context.address) \
                is not context:
            return
        impu = NameAddress.build(context.associated[0])
        transport = self.core.transport
        subscribe = new_request(
            "SUBSCRIBE", impu.uri, via=self.endpoint.make_via(transport),
            from_=NameAddress(self.uri("pcscf", lr=False)), to=impu,
            call_id=new_call_id(self.host), routes=context.service_route[:1])
        subscribe.headers.add("Event", reginfo.EVENT)
        subscribe.headers.add("Accept", reginfo.MIME_TYPE)
        subscribe.headers.add("Expires", 600000)  # 24.229 §5.2.3
        subscribe.headers.add("Contact", NameAddress(self.uri(transport=transport, lr=False)))
        subscribe.headers.add("P-Asserted-Identity", NameAddress(self.uri("pcscf", lr=False)))
        context.reg_subscription = Dialog(subscribe.call_id, subscribe.from_, subscribe.to,
                                          subscribe.uri, (), 1, 1)
        if context.subscribed_call_id is not None:
            self._by_subscription.pop(context.subscribed_call_id, None)
        context.subscribed_call_id = subscribe.call_id
        self._by_subscription[subscribe.call_id] = context

        def answered(response: Response) -> None:
            if response.status < 200 or context.reg_subscription is None:
                return
            if response.status >= 300:
                context.reg_subscription = None
                return
            context.reg_subscription = Dialog.as_uac(subscribe, response)

        self.endpoint.send_request(subscribe, self.core, answered)

    def on_reg_notify(self, request: Request, context: UeContext,
                      transaction: TransactionKey) -> None:
        try:
            document = reginfo.parse(request.body)
        except XmlError as exc:
            self.reply(request, transaction, 400, f"Bad Request ({exc})"[:200])
            return
        self.reply(request, transaction, 200)
        terminated = (request.headers.get("Subscription-State") or "").lower() \
            .startswith("terminated")
        if terminated:
            context.reg_subscription = None
        active = any(r.state == "active" for r in document.registrations)
        if context.registered and not active:
            # The route to the registrar stays known: the UE may still watch (below).
            logger.info("%s: %s de-registered (reg event)", self.name, context.name)
            context.registered = False
            self.keep(context)

    def originating(self, request: Request, context: UeContext, transaction: TransactionKey
                    ) -> None:
        # A UE the network just de-registered may still subscribe to its reg event, to
        # learn why (its SUBSCRIBE can come after the NOTIFY that told us).
        watching = request.method == "SUBSCRIBE" and request.event_package == "reg" and \
            bool(context.service_route)
        if not context.associated or not (context.registered or watching):
            self.reply(request, transaction, 403, "Forbidden (register first)")
            return
        preferred = request.headers.get("P-Preferred-Identity")
        identity = context.associated[0]
        if preferred is not None:
            aor = NameAddress.parse(preferred).uri.aor
            if aor in context.associated:
                identity = aor
            request.headers.remove("P-Preferred-Identity")
        request.headers.set("P-Asserted-Identity", NameAddress.build(identity))
        if request.to.tag is None:
            # Initial request: the route set is the stored Service-Route (24.229 §5.2.6.3.2),
            # and it goes to the served system's entry point (its edge proxy, if any), which
            # routes on by that Route set.
            request.headers.remove("Route")
            for value in context.service_route:
                request.headers.add("Route", value)
            self.record_route(request)
            destination = self.core
        else:
            self.pop_own_route(request)
            destination = self.next_hop(request) or self.core
        self.forward(request, transaction, destination)

    def terminating(self, request: Request, transaction: TransactionKey) -> None:
        self.pop_own_route(request)
        if request.to.tag is None:
            self.record_route(request)
        target = request.uri
        if target.host not in self.attached and not request.routes:
            self.reply(request, transaction, 404, "Not Found (UE not attached here)")
            return
        destination = self.next_hop(request)
        if destination is None:
            self.reply(request, transaction, 416, "Unsupported URI Scheme")
            return
        self.forward(request, transaction, destination)
