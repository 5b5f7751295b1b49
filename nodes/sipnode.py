"""What every SIP-speaking node shares: its endpoint, its own URI, and proxying.

``SipNode`` is a transaction user (see ``emulator.transport.endpoint``):
subclasses implement :meth:`on_request` as plain code.  :meth:`forward`
is RFC 3261 §16 stateful proxying reduced to what the emulator's proxies
need: push a Via, decrement Max-Forwards, send in a client transaction and
relay every response back through the server transaction, with our Via
popped (§16.7).  ACK to a 2xx has no transaction and is forwarded
statelessly (§16.11).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from emulator.sip.builder import cancel_for
from emulator.sip.builder import new_tag
from emulator.sip.builder import stateless_tag
from emulator.sip.events import Address
from emulator.sip.events import RequestReceived
from emulator.sip.events import ResponseReceived
from emulator.sip.events import TransactionKey
from emulator.sip.headers import NameAddress
from emulator.sip.message import TOP_VIA
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig
from emulator.sip.uri import URI
from emulator.topology.model import ConnectionLimits
from emulator.topology.model import Impairment
from emulator.topology.model import OverloadLimit
from emulator.transport.base import Tap
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.guard import DEFAULT_CONNECTION_LIMITS

from .base import Readiness
from .journal import Journal
from .journal import Tables
from .overload import OverloadGate
from .plan import Impaired
from .plan import Listener
from .plan import NodePlan

logger = logging.getLogger(__name__)

ResponseFilter = Callable[[Response], Response | None]


class AnswerRetransmitter:
    """RFC 3261 §13.3.1.4: a UAS core re-sends its 2xx to an INVITE, first T1 after it,
    the interval doubling up to T2, until the ACK comes, "independent of whatever
    transport protocols are used" (the hops beyond the first may lose it).  After 64·T1
    without an ACK it stops and calls the answer's ``on_give_up``: the session SHOULD
    then end with a BYE.  By Call-ID; as bounded as the dialogs of the node using it."""

    def __init__(self, node: SipNode) -> None:
        self.node = node  # its endpoint as it is at each send (a test may give it another)
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, call_id: str, response: Response, transaction: TransactionKey | None,
              on_give_up: Callable[[], None] | None = None) -> None:
        self.acknowledged(call_id)
        self._next(call_id, response, transaction, on_give_up,
                   self.node.endpoint.layer.timers.t1, 0.0)

    def acknowledged(self, call_id: str) -> None:
        """The ACK (or the BYE, or the node's end) for ``call_id``'s 2xx: stop."""
        handle = self._pending.pop(call_id, None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    def _next(self, call_id: str, response: Response, transaction: TransactionKey | None,
              on_give_up: Callable[[], None] | None, interval: float, elapsed: float) -> None:
        timers = self.node.endpoint.layer.timers
        limit = 64 * timers.t1
        if elapsed + interval >= limit:
            # Timer L ends the Accepted transaction at 64·T1 (RFC 6026 §8.7): no 2xx goes
            # after it, so that is when to give up.
            self._pending[call_id] = asyncio.get_running_loop().call_later(
                limit - elapsed, self._give_up, call_id, on_give_up)
            return

        def fire() -> None:
            try:
                self.node.endpoint.send_response(response, transaction)
            except Exception:  # the transaction ended early: no ACK can confirm the 2xx
                self._give_up(call_id, on_give_up)
                return
            self._next(call_id, response, transaction, on_give_up,
                       min(2 * interval, timers.t2), elapsed + interval)

        self._pending[call_id] = asyncio.get_running_loop().call_later(interval, fire)

    def _give_up(self, call_id: str, on_give_up: Callable[[], None] | None) -> None:
        self._pending.pop(call_id, None)
        if on_give_up is not None:
            on_give_up()


NO_OVERLOAD_CONTROL = OverloadLimit(enabled=False)
OVERLOADED = "Service Unavailable (overload)"
MAX_OWN_URIS = 64
"""Own URIs a node remembers (:meth:`SipNode.uri`): it names itself a handful of ways."""


class SipNode(Readiness):
    """A node with a SIP endpoint on ``host``, listening as ``listeners`` say.

    ``tap`` sees every message in and out (the application-level capture).
    """

    def __init__(self, name: str, host: str, listeners: tuple[Listener, ...], *,
                 tap: Tap | None = None, server_ssl: ssl.SSLContext | None = None,
                 client_ssl: ssl.SSLContext | None = None,
                 impairments: tuple[Impaired, ...] = (),
                 state_file: str | None = None,
                 connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
                 timers: TimerConfig = DEFAULT_TIMERS,
                 overload: OverloadLimit = NO_OVERLOAD_CONTROL) -> None:
        super().__init__()
        self.name = name
        self.host = host
        self.listeners = listeners
        self.server_ssl = server_ssl
        self.connection_limits = connection_limits
        self.endpoint = SipEndpoint(name, self, tap=tap, client_ssl=client_ssl, timers=timers)
        self.overload = OverloadGate(overload)
        """Sheds new requests while the node is behind (nodes.overload): the network's
        nodes, by the topology's ``limits.overload``; a UE serves whatever it gets."""
        if overload.enabled:
            self.endpoint.layer.before_transaction = self._shed
        self.impaired: dict[str, Impairment | None] = {}
        """By peer: what the link to it does to what this node sends (plan, then run time)."""
        self._uris: dict[tuple[str | None, str, bool, tuple[tuple[str, str | None], ...]],
                         URI] = {}
        """:meth:`uri`'s answers while the listeners are ``_uris_of`` (URIs are immutable)."""
        self._uris_of: tuple[Address, ...] = ()
        for impaired in impairments:
            self.impair(impaired.peer, list(impaired.hosts), impaired.impairment)
        self._forwarded: dict[TransactionKey, tuple[Request, Address]] = {}
        """INVITEs proxied and not yet answered finally, for CANCEL (§16.10)."""
        self.journal = Journal(state_file)
        """What survives a restart (see nodes.journal); read back before serving."""

    @staticmethod
    def planned(plan: NodePlan) -> dict[str, Any]:
        """What a network node's plan says of its SIP side, as keyword arguments."""
        return {"impairments": plan.impairments, "state_file": plan.state_file,
                "connection_limits": plan.connection_limits, "timers": plan.sip_timers,
                "overload": plan.overload}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.host}:{sorted(self.endpoint.ports)}>"

    async def start(self) -> None:
        self.recover(self.journal.open())
        for listener in self.listeners:
            tls = self.server_ssl if listener.protocol == "tls" else None
            await self.endpoint.listen(listener.protocol, listener.host, listener.port,
                                       server_ssl=tls, connection_limits=self.connection_limits,
                                       admit=self.admits_connection,
                                       on_wait=self._queue_wait if self.overload.limit.enabled
                                       else None)
        self._mark_ready()

    async def stop(self) -> None:
        await self.endpoint.close()
        self.journal.close()

    admits_connection: Callable[[str], bool] | None = None
    """A node's test of a TCP/TLS peer's address at accept time (None: anyone may
    connect, within the connection limits)."""

    def recover(self, tables: Tables) -> None:
        """Take back what an earlier life of this node kept (``tables`` of its journal)."""

    REMOTE_CALLS = frozenset({"impair"})

    def impair(self, peer: str, hosts: list[str], impairment: Impairment | None) -> None:
        """What the link to ``peer`` (at ``hosts``) does to what this node sends, from now on
        (None: nothing)."""
        self.impaired[peer] = impairment
        for host in hosts:
            self.endpoint.impairer.set(host, impairment)

    def sip_state(self) -> list[tuple[str, str, int]]:
        return [(a.transport, a.host, a.port) for a in self.endpoint.addresses]

    def uri(self, user: str | None = None, *, transport: str = "udp", lr: bool = True,
            params: tuple[tuple[str, str | None], ...] = ()) -> URI:
        """This node's own SIP URI on ``transport`` (Via-less identities: Contact,
        Record-Route, Path, Service-Route).  The one place a node names itself, on nearly
        every message: remembered until the listeners change, a few dozen at most."""
        listening = self.endpoint.addresses
        if listening is not self._uris_of:
            self._uris.clear()
            self._uris_of = listening
        key = (user, transport, lr, params)
        known = self._uris.get(key)
        if known is not None:
            return known
        uri = self._uri(listening, user, transport, lr, params)
        if len(self._uris) < MAX_OWN_URIS:
            self._uris[key] = uri
        return uri

    def _uri(self, listening: tuple[Address, ...], user: str | None, transport: str, lr: bool,
             params: tuple[tuple[str, str | None], ...]) -> URI:
        addresses = {address.transport: address for address in listening}
        if not addresses:
            raise RuntimeError(f"{self.name} is not listening yet")
        local = addresses.get(transport)
        if local is None:  # no such listener: name one it has, so the URI still reaches it
            local = next(iter(addresses.values()))
            transport = local.transport
        own: tuple[tuple[str, str | None], ...] = ()
        if transport != "udp":
            own += (("transport", transport),)
        if lr:
            own += (("lr", None),)
        return URI("sip", user=user, host=local.host, port=local.port, params=own + params)

    def is_mine(self, uri: URI) -> bool:
        return uri.host == self.host and (uri.port or 5060) in self.endpoint.ports

    def is_self(self, address: Address) -> bool:
        return address.host == self.host and address.port in self.endpoint.ports

    def _queue_wait(self, wait: float) -> None:
        self.overload.observe(wait, self.endpoint.now())

    def _shed(self, request: Request) -> Response | None:
        """A new non-INVITE request while shedding: 503 with Retry-After, stateless (as
        Kamailio's ``sl_send_reply`` answers for its overload modules), so a refusal costs
        no transaction; a retransmission gets the same answer, To tag included."""
        if not self.overload.refuses(request):
            return None
        response = request.make_response(503, OVERLOADED, to_tag=stateless_tag(request))
        response.headers.add("Retry-After", str(self.overload.limit.retry_after))
        return response

    # -- TransactionUser -------------------------------------------------------
    def request_received(self, event: RequestReceived) -> None:
        request = event.request
        if request.method == "ACK":
            self.on_ack(request, event.source)
            return
        assert event.transaction is not None
        if request.method == "INVITE" and self.overload.refuses(request):
            # Through its transaction, which absorbs the ACK; other methods were screened
            # statelessly before the layer made one (_shed).
            self.reply(request, event.transaction, 503, OVERLOADED,
                       headers=(("Retry-After", str(self.overload.limit.retry_after)),))
            return
        if request.method == "CANCEL":
            self.on_cancel(request, event.source, event.transaction)
            return
        self.on_request(request, event.source, event.transaction)

    def response_received(self, event: ResponseReceived) -> None:
        self.on_stray_response(event.response, event.source)

    def on_request(self, request: Request, source: Address,
                   transaction: TransactionKey | None) -> None:
        self.reply(request, transaction, 501)

    def on_ack(self, request: Request, source: Address) -> None:
        """ACK for a 2xx: proxies forward it statelessly along its Route (§16.11)."""
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return  # §16.3 step 3; an ACK is never answered
        self.pop_own_route(request)
        destination = self.next_hop(request)
        if destination is None or self.is_self(destination):
            return  # nowhere to go, or back to us: a loop
        request.headers.set("Max-Forwards", (max_forwards if max_forwards is not None
                                             else 71) - 1)
        self.push_via(request, destination.transport)
        self.endpoint.send_stateless(request, destination)

    def on_cancel(self, request: Request, source: Address, transaction: TransactionKey) -> None:
        """§16.10: answer the CANCEL ourselves, and cancel the INVITE we forwarded.

        The CANCEL we send downstream copies the forwarded INVITE's top Via,
        branch included, so the next hop matches it to that INVITE (§9.1).
        """
        invite_key = self.endpoint.layer.invite_for_cancel(request)
        forwarded = self._forwarded.get(invite_key) if invite_key is not None else None
        if forwarded is None:
            self.reply(request, transaction, 481)
            return
        self.reply(request, transaction, 200)
        invite, destination = forwarded
        self.endpoint.send_request(cancel_for(invite), destination, lambda response: None)

    def on_stray_response(self, response: Response, source: Address) -> None:
        """A 2xx retransmission after our client transaction ended: relay it upstream."""
        vias = response.vias
        if len(vias) < 2 or vias[0].host != self.host:
            return
        upstream = vias[1]
        host = upstream.received or upstream.host
        port = upstream.rport if isinstance(upstream.rport, int) else upstream.port or 5060
        transport = upstream.transport.lower()
        if not 0 < port < 65536 or not host.isascii() or transport not in ("udp", "tcp", "tls"):
            return  # a forged Via: nowhere sensible to relay to
        response.headers.pop_first_value("Via")
        self.endpoint.send_stateless(response, Address(transport, host, port))

    # -- helpers -------------------------------------------------------------
    def reply(self, request: Request, transaction: TransactionKey | None, status: int,
              reason: str | None = None, *, headers: tuple[tuple[str, str], ...] = ()
              ) -> None:
        if transaction is None:
            return
        response = request.make_response(status, reason, to_tag=new_tag())
        for name, value in headers:
            response.headers.add(name, value)
        self.endpoint.send_response(response, transaction)

    def push_via(self, request: Request, transport: str) -> None:
        request.headers.prepend("Via", self.endpoint.make_via(transport), view=TOP_VIA)

    def pop_own_route(self, request: Request) -> None:
        routes = request.routes
        if routes and self.is_mine(routes[0].uri):
            request.headers.pop_first_value("Route")

    def next_hop(self, request: Request) -> Address | None:
        """Where a request goes: its top Route (loose routing), else its Request-URI (§16.6)."""
        routes = request.routes
        target = routes[0].uri if routes else request.uri
        if target.scheme not in ("sip", "sips") or not target.host:
            return None
        return Address(target.transport, target.host, target.port or 5060)

    def record_route(self, request: Request, transport: str | None = None) -> None:
        """Stay on the dialog's path (§16.6 step 4).

        The URI names the transport the request arrived on (its top Via,
        before ours is pushed).  Every node listens on every transport, so
        the other side of a mixed-transport path reaches us on it too; a node
        limited to one transport per side would need RFC 5658 double
        record-routing, which is not implemented.
        """
        transport = transport or request.top_via.transport.lower()
        request.headers.prepend("Record-Route", NameAddress(self.uri(transport=transport)))

    def forward(self, request: Request, transaction: TransactionKey, destination: Address, *,
                on_final: ResponseFilter | None = None) -> None:
        """Proxy ``request`` to ``destination`` and relay the responses (§16.6, §16.7).

        ``on_final`` may inspect or replace the final response before it is
        relayed (returning None drops it, e.g. to try elsewhere).
        """
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self.reply(request, transaction, 483)
            return
        if not self.endpoint.serves(destination.transport):
            # A Route or Request-URI naming a transport we have not (a peer's
            # ";transport=tcp060"): nothing can be sent, a transport error (§16.9).
            self.reply(request, transaction, 503, "Service Unavailable (unsupported transport)")
            return
        request.headers.set("Max-Forwards", (max_forwards if max_forwards is not None else 71) - 1)
        self.push_via(request, destination.transport)

        if request.method == "INVITE":
            self._forwarded[transaction] = (request, destination)

        def relay(response: Response) -> None:
            if response.status == 100:
                return  # 100 Trying is hop-by-hop (§16.7 step 5)
            if response.status >= 200:
                self._forwarded.pop(transaction, None)
            if response.status >= 200 and on_final is not None:
                filtered = on_final(response)
                if filtered is None:
                    return
                response = filtered
            if response.headers.get("Via") is not None and response.top_via.host == self.host:
                response.headers.pop_first_value("Via")
            try:
                self.endpoint.send_response(response, transaction)
            except Exception as exc:  # the server transaction may have ended (Timer H)
                logger.debug("%s: cannot relay %r: %s", self.name, response, exc)

        self.endpoint.send_request(request, destination, relay)
