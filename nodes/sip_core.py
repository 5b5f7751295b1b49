"""The SIP core of an MC system: registrar (S-CSCF role) and routing proxy.

Registration (RFC 3261 §10.3, RFC 3327, 24.229 §5.4.1):

* bindings with the RFC 3261 expiry rules (423 + Min-Expires, ``*`` with
  Expires 0, Call-ID/CSeq ordering), the Path vector stored and echoed;
* ``Service-Route: <sip:orig@core;lr>`` and ``P-Associated-URI`` in the 200;
* the 200 first, then a third-party REGISTER to the MC server whose body is
  the UE's REGISTER as ``message/sip`` (24.229 §5.4.1.7, 24.379 §7.3.1);
* if the MC server refuses it (or never answers), the iFC's default
  handling SESSION_TERMINATED (24.229 §5.4.1.7): the network de-registers
  the user and tells its reg-event subscribers (``nodes.reg_event``), so the
  UE learns of the refusal, Warning included, from a NOTIFY.

Routing of other requests (loose routing, §16.4-16.6):

* originating (Route ``orig``, or straight from a registered UE): the caller
  must be registered; P-Asserted-Identity is added when no P-CSCF did it;
  the request goes to the MC server (the MC service AS, per iFC) and comes
  back with Route ``term``;
* terminating (Route ``term``): the Request-URI's bindings give the contact
  and the Path to reach it (RFC 3327 §5.2);
* in-dialog: by Route, else Request-URI.
"""

from __future__ import annotations

import asyncio
import logging
import os
from email.utils import formatdate
from hashlib import blake2b

from emulator.sip.builder import new_request
from emulator.sip.builder import new_tag
from emulator.sip.events import Address
from emulator.sip.events import TransactionKey
from emulator.sip.headers import Contact
from emulator.sip.headers import NameAddress
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.registrar import SUPPORTED_EXTENSIONS
from emulator.sip.registrar import Binding
from emulator.sip.registrar import LocationService
from emulator.sip.registrar import Registered
from emulator.sip.registrar import RegistrarPolicy
from emulator.sip.registrar import process_register
from emulator.sip.registrar import registered_response
from emulator.sip.uri import URI
from emulator.transport.base import Tap

from .base import describe
from .base import tls_client
from .base import tls_server
from .journal import Tables
from .plan import NodePlan
from .plan import SipCoreOptions
from .reg_event import Refused
from .reg_event import RegEventNotifier
from .sipnode import SipNode

logger = logging.getLogger(__name__)

EXPIRY_SWEEP = 1.0
"""Seconds between looks for expired registrations (each look is O(log n) per one)."""


class SipCore(SipNode):
    """Registrar and proxy for one MC system's domain.

    Its plan's ``mc-server`` peer is the MC service AS (third-party REGISTER,
    originating requests); without one it is a plain registrar and proxy.
    """

    def __init__(self, plan: NodePlan, *, tap: Tap | None = None,
                 policy: RegistrarPolicy | None = None) -> None:
        assert isinstance(plan.options, SipCoreOptions)
        super().__init__(plan.name, plan.host, plan.sip_listeners, tap=tap,
                         server_ssl=tls_server(plan.credentials),
                         client_ssl=tls_client(plan.credentials),
                         **self.planned(plan))
        self.plan = plan
        self.domain = plan.options.domain
        mc_server = plan.peer("mc-server")
        self.mc_server: Address | None = mc_server.address if mc_server else None
        self.location = LocationService(policy or RegistrarPolicy(
            min_expires=plan.options.min_expires))
        self.trusted_hosts = frozenset(p.host for p in plan.peers
                                       if p.role in ("mc-server", "gateway", "edge-proxy"))
        """The trust domain (RFC 3325 §2.3): hosts whose P-Asserted-Identity is believed,
        i.e. our MC server, the P-CSCFs (gateways) that serve this system and its edge proxy."""
        self._call_id_key = os.urandom(16)
        """This life's key for the third-party registrations' Call-IDs (:meth:`_call_id`)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._cseq = 0
        self._date: tuple[int, str] = (-1, "")
        """The Date of this second's 200s to REGISTER, formatted once a second."""
        self.reg_event = RegEventNotifier(
            self, lambda aor: self.location.lookup(aor, now=self.endpoint.now()),
            self.endpoint.now)

    async def start(self) -> None:
        await super().start()
        self._sweep()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await super().stop()

    def _sweep(self) -> None:
        """Registrations end when they expire, not when the next REGISTER comes by."""
        self._sweeper = asyncio.get_running_loop().call_later(EXPIRY_SWEEP, self._sweep)
        try:
            self.expire(self.endpoint.now())
        except Exception:  # a defect must not end the sweeping
            logger.exception("%s: expiring registrations failed", self.name)

    def state(self) -> dict[str, object]:
        return {**describe(self.plan, self.sip_state()), "guards": self.endpoint.guard_state(),
                "overload": self.overload.state(),
                "registered_aors": self.location.aor_count, "bindings": len(self.location),
                "reg_event_subscriptions": len(self.reg_event),
                "restored": self.journal.restored}

    # -- what survives a restart (a registrar's location database) --------------------
    def recover(self, tables: Tables) -> None:
        now, wall = self.endpoint.now(), self.endpoint.wall_clock()
        for aor, rows in tables.get("bindings", {}).items():
            try:
                bindings = [Binding(Contact.parse(row["contact"]), row["call_id"], row["cseq"],
                                    now + row["expires"] - wall, tuple(row["path"]),
                                    row["source"])
                            for row in rows if row["expires"] > wall]
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("%s: kept bindings of %s unusable: %s", self.name, aor, exc)
                continue
            # One per contact key, as the registrar keeps them (a hand-edited journal may
            # repeat one: the last wins).
            self.location.restore(aor, tuple({b.key: b for b in bindings}.values()))

    def keep(self, aor: str) -> None:
        """Write ``aor``'s bindings through to the journal (expiry on the wall clock)."""
        bindings = self.location.snapshot(aor)
        if not bindings:
            self.journal.delete("bindings", aor)
            return
        offset = self.endpoint.wall_clock() - self.endpoint.now()
        self.journal.put("bindings", aor, [
            {"contact": b.contact_text, "call_id": b.call_id, "cseq": b.cseq,
             "expires": b.expires_at + offset, "path": list(b.path), "source": b.source}
            for b in bindings])

    # -- dispatch --------------------------------------------------------------
    def on_request(self, request: Request, source: Address,
                   transaction: TransactionKey | None) -> None:
        assert transaction is not None
        if request.method == "REGISTER":
            self.on_register(request, source, transaction)
            return
        if request.method == "SUBSCRIBE" and request.event_package == "reg":
            self.on_reg_subscribe(request, source, transaction)
            return
        if self.mc_server is None:
            self.registrar_only(request, transaction)
            return
        routes = request.routes
        popped = routes[0] if routes and self.is_mine(routes[0].uri) else None
        if popped is not None:
            request.headers.pop_first_value("Route")
        in_dialog = request.to.tag is not None
        if in_dialog:
            destination = self.next_hop(request)
            if destination is None:
                self.reply(request, transaction, 404)
                return
            self.forward(request, transaction, destination)
            return
        if popped is not None and popped.uri.user == "term":
            self.terminating(request, transaction)
        else:
            self.originating(request, source, transaction)

    def registrar_only(self, request: Request, transaction: TransactionKey) -> None:
        """No MC server: a plain registrar, which answers OPTIONS (§11.2) and nothing else."""
        allow = (("Allow", "REGISTER, OPTIONS"),)
        if request.method == "OPTIONS":
            self.reply(request, transaction, 200,
                       headers=(*allow, ("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS)))))
        else:
            self.reply(request, transaction, 405, headers=allow)

    # -- registration ----------------------------------------------------------
    def expire(self, now: float) -> None:
        """Registrations that ran out end (RFC 3261 §10.3): kept so, and their reg-event
        subscribers hear contact event ``expired`` (RFC 3680 §5.1)."""
        for aor, bindings in self.location.purge(now):
            self.journal.delete("bindings", aor)
            self.reg_event.ended(aor, bindings, "expired")

    def on_register(self, request: Request, source: Address, transaction: TransactionKey
                    ) -> None:
        now = self.endpoint.now()
        self.expire(now)
        tag = new_tag()
        outcome = process_register(request, domains={self.domain}, location=self.location,
                                   now=now, to_tag=tag)
        if isinstance(outcome, Response):
            self.endpoint.send_response(outcome, transaction)
            return
        # 24.229 §5.4.1.2.2 then §5.4.1.7: the UE is answered, then the AS is told.
        if outcome.changed and outcome.bindings and self.mc_server is not None:
            self.reg_event.settling(outcome.aor)
        self._answer_register(request, transaction, outcome, now, tag)
        if not outcome.changed:
            return
        if self.mc_server is not None:
            self._third_party_register(request, outcome, now)
        if not outcome.bindings and outcome.previous:
            self.reg_event.ended(outcome.aor, outcome.previous, "unregistered")

    def _third_party_register(self, request: Request, registered: Registered,
                              now: float) -> None:
        """24.229 §5.4.1.7 / 24.379 §7.3.1: tell the MC server, with the UE's REGISTER inside."""
        mc_server = self.mc_server
        assert mc_server is not None
        aor = registered.aor
        expires = max((b.remaining(now) for b in registered.bindings), default=0)
        self._cseq += 1
        third_party = new_request(
            "REGISTER", URI("sip", host=mc_server.host, port=mc_server.port),
            via=self.endpoint.make_via(mc_server.transport),
            from_=NameAddress(self.uri("scscf", lr=False)), to=NameAddress(request.to.uri),
            call_id=self._call_id(aor), cseq=self._cseq)
        third_party.headers.add("Contact", NameAddress(self.uri(lr=False)))
        third_party.headers.add("Expires", expires)
        third_party.set_body(request.to_bytes(), "message/sip")

        def answered(response: Response) -> None:
            if response.status < 200 or not expires or self.endpoint.closed:
                return  # closed: we are stopping, which is no answer of the MC server
            if response.status < 300:
                self.reg_event.settled(aor)
                return
            # Default handling SESSION_TERMINATED: a network-initiated de-registration
            # (24.229 §5.4.1.5) of what this REGISTER bound.
            self.deregister(aor, Refused(response.status, response.reason,
                                         tuple(response.headers.get_all("Warning")),
                                         self.endpoint.now()))

        self.endpoint.send_request(third_party, mc_server, answered)

    def _call_id(self, aor: str) -> str:
        """The Call-ID of ``aor``'s third-party registrations: the same for all of them
        while this node lives, as RFC 3261 §10.2 asks of a UA for its registrations in a
        boot cycle, and never guessable from outside (a keyed BLAKE2b of the AOR, §8.1.1.4).
        Derived, not held: a table of them cost every registered UE ~0.15 kB."""
        digest = blake2b(aor.encode(), key=self._call_id_key, digest_size=12).hexdigest()
        return f"{digest}@{self.host}"

    def deregister(self, aor: str, refused: Refused) -> None:
        """The network ends ``aor``'s registration: bindings gone (and kept so), subscribers
        told with contact event ``rejected``."""
        previous = self.location.snapshot(aor)
        self.location.restore(aor, ())
        self.keep(aor)
        logger.info("%s: de-registered %s: the MC server answered %s %s", self.name, aor,
                    refused.status, "; ".join(refused.warnings))
        self.reg_event.ended(aor, previous, "rejected", refused=refused)

    def on_reg_subscribe(self, request: Request, source: Address,
                         transaction: TransactionKey) -> None:
        """24.229 §5.4.2.1: the registrar is the reg event notifier for its users."""
        self.pop_own_route(request)
        aor = request.uri.aor
        # 24.229 §5.4.2.1.1: the user (asserted by a P-CSCF, or from its own contact), its
        # P-CSCF or its AS.
        authorised = source.host in self.trusted_hosts or \
            self.registered_identity(request, source) == aor
        self.reg_event.on_subscribe(request, transaction, authorised=authorised)

    def _answer_register(self, request: Request, transaction: TransactionKey,
                         registered: Registered, now: float, tag: str) -> None:
        if registered.changed:
            self.keep(registered.aor)  # before the 200: what is answered is kept
        response = registered_response(request, registered, now=now, to_tag=tag,
                                       date=self.date())
        if registered.bindings:  # 24.229 §5.4.1.2.2
            # On the transport the REGISTER came over: the link the P-CSCF (or the UE)
            # will route originating requests on.
            transport = request.top_via.transport.lower()
            response.headers.add("Service-Route", NameAddress(self.uri("orig",
                                                                       transport=transport)))
            response.headers.add("P-Associated-URI", NameAddress(request.to.uri))
        self.endpoint.send_response(response, transaction)

    def date(self) -> str:
        """The Date header a 200 to REGISTER carries (§10.3 step 8, §20.17), on the node's
        wall clock (the loop's, which tests may move)."""
        second = int(self.endpoint.wall_clock())
        if second != self._date[0]:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    # -- routing ---------------------------------------------------------------
    def registered_identity(self, request: Request, source: Address) -> str | None:
        """The AOR the request is from: P-Asserted-Identity when a P-CSCF set it, else the
        registered contact the request came from (the core acting as its own P-CSCF)."""
        asserted = request.headers.get("P-Asserted-Identity")
        if asserted is not None and source.host in self.trusted_hosts:
            aor = NameAddress.parse(asserted).uri.aor
            return aor if self.location.lookup(aor, now=self.endpoint.now()) else None
        # RFC 3325 §5: an asserted identity from outside the trust domain is removed.
        request.headers.remove("P-Asserted-Identity")
        now = self.endpoint.now()
        for aor in self.location.aors():
            for binding in self.location.lookup(aor, now=now):
                if binding.contact.uri.host == source.host and not binding.path:
                    return aor
        return None

    def originating(self, request: Request, source: Address, transaction: TransactionKey
                    ) -> None:
        identity = self.registered_identity(request, source)
        if identity is None:
            self.reply(request, transaction, 403, "Forbidden (originating user not registered)")
            return
        if "P-Asserted-Identity" not in request.headers:
            request.headers.add("P-Asserted-Identity", NameAddress(URI.parse(identity)))
        mc_server = self.mc_server
        if mc_server is None:  # no AS: straight to the terminating side
            self.terminating(request, transaction)
            return
        self.record_route(request)
        # iFC: the MC service AS sees the request first, then sends it back for terminating.
        request.headers.prepend("Route", NameAddress(self.uri("term",
                                                              transport=mc_server.transport)))
        mc = URI("sip", host=mc_server.host, port=mc_server.port,
                 params=(("lr", None),) if mc_server.transport == "udp" else
                 (("transport", mc_server.transport), ("lr", None)))
        request.headers.prepend("Route", NameAddress(mc))
        self.forward(request, transaction, mc_server)

    def terminating(self, request: Request, transaction: TransactionKey) -> None:
        now = self.endpoint.now()
        bindings = self.location.lookup(request.uri.aor, now=now)
        if not bindings:
            self.reply(request, transaction, 480, "Temporarily Unavailable (not registered)")
            return
        binding = max(bindings, key=lambda b: b.expires_at)
        request.uri = binding.contact.uri
        for value in reversed(binding.path):
            request.headers.prepend("Route", value)
        destination = self.next_hop(request)
        if destination is None:  # e.g. a tel: or urn: Contact: nothing SIP can reach
            self.reply(request, transaction, 480, "Temporarily Unavailable (no SIP contact)")
            return
        self.record_route(request)
        self.forward(request, transaction, destination)
