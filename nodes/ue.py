"""The MC service UE: IdM client, CM client and MC service client (23.280 §10.6, 33.180 §5.1).

Procedures, each an ``async`` method because each waits on the network:

* at home: :meth:`login` (OIDC, 33.180 B.4), :meth:`register` with the
  access tokens in info bodies (24.379 §7.2.1), :meth:`download_profile`
  (24.484), :meth:`request_security_token` (RFC 8693, 33.180 B.7.2);
* migration: :meth:`attach` to the local PLMN, :meth:`request_partner_token`
  (33.180 B.7.4, project reading), :meth:`register` at the partner through
  the gateway with partner identities (23.280 §10.1.6.2);
* services: :meth:`private_call` (INVITE/200/ACK/BYE) and
  :meth:`send_short_data` (SIP MESSAGE); incoming calls and messages are
  answered by :meth:`on_request`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from emulator.documents import affiliation
from emulator.documents import groups as group_documents
from emulator.documents import mcdata
from emulator.documents import mcx_info
from emulator.documents import poc_settings
from emulator.documents import profile as profiles
from emulator.documents import reginfo
from emulator.documents.xmlsafe import XmlError
from emulator.refusal import Refusal
from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_request
from emulator.sip.builder import new_tag
from emulator.sip.dialog import Dialog
from emulator.sip.events import Address
from emulator.sip.events import TransactionKey
from emulator.sip.headers import Contact
from emulator.sip.headers import NameAddress
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.sip.multipart import body_parts
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig
from emulator.sip.uri import URI
from emulator.topology.model import Impairment
from emulator.transport.base import Tap

from .base import describe
from .base import tls_client
from .group_call import MediaSessions
from .group_call import floor_control_sdp
from .idm_client import IdmClient
from .idm_client import Tokens
from .plan import Impaired
from .plan import Listener
from .plan import NodePlan
from .plan import UeOptions
from .sipnode import AnswerRetransmitter
from .sipnode import SipNode

logger = logging.getLogger(__name__)

ICSI_MCPTT = "urn:urn-7:3gpp-service.ims.icsi.mcptt"
ICSI_MCVIDEO = "urn:urn-7:3gpp-service.ims.icsi.mcvideo"
ICSI_MCDATA_SDS = "urn:urn-7:3gpp-service.ims.icsi.mcdata.sds"  # 24.282 [U]: not retrieved
SERVICE_FEATURES = {"mcptt": ("+g.3gpp.mcptt", ICSI_MCPTT),
                    "mcdata": ("+g.3gpp.mcdata.sds", ICSI_MCDATA_SDS),
                    "mcvideo": ("+g.3gpp.mcvideo", ICSI_MCVIDEO)}
"""Per MC service: the media feature tag and ICSI a registering UE's Contact carries."""
REG_EVENT_EXPIRES = 600000  # 24.229 §5.1.1.3
MCDATA_PAYLOAD = mcdata.PAYLOAD_MIME_TYPE


@dataclass
class Registration:
    """A SIP registration the UE holds."""

    core: Address
    domain: str
    impu: str
    response: Response
    service_route: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegState:
    """What the UE's reg-event subscription last said of its registration (RFC 3680)."""

    state: str
    """active or terminated (of the registration)."""
    events: tuple[str, ...] = ()
    """The contacts' events (registered, unregistered, rejected, ...)."""
    status: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()
    """From the project-defined service-authorisation extension: why it was refused."""

    @classmethod
    def of(cls, document: reginfo.RegInfo) -> RegState:
        registration = document.registrations[0] if document.registrations else None
        if registration is None:
            return cls("terminated")
        refusal = next((c.service_authorisation for c in registration.contacts
                        if c.service_authorisation is not None), None)
        return cls(registration.state, tuple(c.event for c in registration.contacts),
                   refusal.status if refusal else 0, refusal.reason if refusal else "",
                   refusal.warnings if refusal else ())


@dataclass(frozen=True)
class SipOutcome:
    """What a SIP request of the UE got: plain data, so it crosses a process boundary."""

    status: int
    reason: str
    warnings: tuple[str, ...] = ()
    service_route: tuple[str, ...] = ()
    registration: RegState | None = None
    """For a REGISTER: what the reg event then said (24.229 §5.1.1.3), if subscribed."""
    retry_after: int | None = None
    """Seconds a 503 or 500 asked to wait before trying again (RFC 3261 §20.33)."""

    @classmethod
    def of(cls, response: Response, registration: RegState | None = None) -> SipOutcome:
        return cls(response.status, response.reason,
                   tuple(response.headers.get_all("Warning")),
                   tuple(response.headers.values("Service-Route")), registration,
                   _retry_after(response))


def _retry_after(response: Response) -> int | None:
    """A Retry-After the UE can read; a malformed one is as good as none."""
    try:
        return response.retry_after
    except ValueError:
        return None


@dataclass
class RegWatch:
    """The UE's subscription to its own registration at one registrar."""

    dialog: Dialog
    first: asyncio.Future[RegState]
    latest: RegState | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Received:
    """What the UE was sent: callers it answered and short data texts, latest last."""

    calls_answered: tuple[str, ...]
    messages: tuple[str, ...]


@dataclass
class CallRecord:
    """What a private call did, for verdicts."""

    callee: str
    invite_status: int = 0
    bye_status: int = 0
    events: list[str] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    """The Warning values of a refused INVITE (24.379 §4.4)."""


class McClient(SipNode):
    """The UE's SIP side on one address (home, or in the visited PLMN after attach).

    The project's one user agent: it registers (RFC 3261 §10.2, one Call-ID
    per registrar and a growing CSeq, §10.2.4), calls, sends short data, and
    answers calls and messages.
    """

    def __init__(self, name: str, host: str, transport: str, *, tap: Tap | None = None,
                 client_ssl: ssl.SSLContext | None = None,
                 impairments: tuple[Impaired, ...] = (), instance: str | None = None,
                 timers: TimerConfig = DEFAULT_TIMERS) -> None:
        # Nobody connects to the UE (requests reach it over the flow it opened), but its
        # Contact must name a real listening port: a self-signed certificate does for TLS.
        super().__init__(name, host, (Listener(transport, host, 0),), tap=tap,
                         server_ssl=_self_signed_context(host) if transport == "tls" else None,
                         client_ssl=client_ssl, impairments=impairments, timers=timers)
        self.transport = transport
        self.messages: deque[Request] = deque(maxlen=100)
        self.calls_answered: deque[str] = deque(maxlen=100)
        self._dialogs: dict[str, Dialog] = {}
        self.unacked = AnswerRetransmitter(self)
        """2xx to INVITE still retransmitted, by Call-ID, until their ACK (§13.3.1.4)."""
        self.media = MediaSessions()
        """The SDP sessions it offers and answers (each its own origin and ports)."""
        self._registrations: dict[Address, tuple[str, int]] = {}
        """Per registrar: the Call-ID and the last CSeq of our REGISTERs (§10.2.4)."""
        self.instance = instance or f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        """RFC 5626 §4.1: the device's stable instance ID (one per UE, whichever address)."""
        self.contact_user = uuid.UUID(self.instance.removeprefix("urn:uuid:")).hex[:12]
        """The Contact's user part: an opaque token, not the node's name (nor the IMPU)."""
        self.watches: dict[Address, RegWatch] = {}
        """Per registrar: our reg-event subscription (24.229 §5.1.1.3)."""
        self.ended: dict[Address, RegState] = {}
        """Per registrar: the last state of a subscription the network ended, until
        :meth:`registration_ended` reads it (one per registrar at most)."""

    async def stop(self) -> None:
        self.unacked.close()
        await super().stop()

    def contact(self, services: tuple[str, ...] = ()) -> NameAddress:
        """Our Contact; registering ``services``, with their feature tags and every ICSI
        (24.229 §5.1.1.2.1, RFC 3840) and the instance ID (RFC 5626 §4.2)."""
        uri = self.uri(self.contact_user, transport=self.transport, lr=False)
        tags: tuple[tuple[str, str | None], ...] = ()
        known = [SERVICE_FEATURES[s] for s in services if s in SERVICE_FEATURES]
        if known:
            icsi = ",".join(i.replace(":", "%3A") for _, i in known)
            tags = (*((tag, None) for tag, _ in known), ("+g.3gpp.icsi-ref", f'"{icsi}"'),
                    ("+sip.instance", f'"<{self.instance}>"'))
        return NameAddress(uri, None, tags)

    # -- incoming --------------------------------------------------------------
    def on_request(self, request: Request, source: Address,
                   transaction: TransactionKey | None) -> None:
        assert transaction is not None
        method = request.method
        if method == "MESSAGE":
            self.messages.append(request)
            self.reply(request, transaction, 200)
        elif method == "NOTIFY":
            self.on_notify(request, transaction)
        elif method == "INVITE":
            self.answer(request, transaction)
        elif method == "BYE":
            if self._dialogs.pop(request.call_id, None) is None:
                self.reply(request, transaction, 481)  # §12.2.2: no such dialog
                return
            self.unacked.acknowledged(request.call_id)
            self.reply(request, transaction, 200)
        elif method == "OPTIONS":
            self.reply(request, transaction, 200)
        else:
            self.reply(request, transaction, 405, headers=(("Allow", "INVITE, ACK, BYE, "
                                                                     "CANCEL, MESSAGE, "
                                                                     "NOTIFY, OPTIONS"),))

    def on_notify(self, request: Request, transaction: TransactionKey) -> None:
        """A reg-event NOTIFY (RFC 3680 §5.2): only for a subscription of ours (RFC 6665
        §4.1.3: else 481); it may come before the 200 to our SUBSCRIBE."""
        watch = next((w for w in self.watches.values()
                      if w.dialog.call_id == request.call_id and
                      w.dialog.local.tag == request.to.tag), None)
        if watch is None:
            self.reply(request, transaction, 481)
            return
        try:
            state = RegState.of(reginfo.parse(request.body))
        except XmlError as exc:
            self.reply(request, transaction, 400, f"Bad Request ({exc})"[:200])
            return
        self.reply(request, transaction, 200)
        watch.latest = state
        if not watch.first.done():
            watch.first.set_result(state)
        if (request.headers.get("Subscription-State") or "").lower().startswith("terminated"):
            watch.ended.set()
            for registrar, known in list(self.watches.items()):
                if known is watch:
                    del self.watches[registrar]
                    # It may end before our de-REGISTER's 200 has been read (the core
                    # sends both at once): kept for registration_ended.
                    self.ended[registrar] = state

    async def subscribe_reg(self, registration: Registration) -> RegState:
        """SUBSCRIBE to our own registration (24.229 §5.1.1.3), and wait for the first
        NOTIFY (at most a transaction timeout: it is a protocol timer, not a pause)."""
        subscribe = self.new_request("SUBSCRIBE", URI.parse(registration.impu),
                                     route=registration.service_route,
                                     identity=registration.impu)
        subscribe.headers.add("Event", reginfo.EVENT)
        subscribe.headers.add("Accept", reginfo.MIME_TYPE)
        subscribe.headers.add("Expires", REG_EVENT_EXPIRES)
        subscribe.headers.add("Contact", self.contact())
        subscribe.headers.add("P-Preferred-Identity", NameAddress.build(registration.impu))
        watch = RegWatch(Dialog(subscribe.call_id, subscribe.from_, subscribe.to,
                                subscribe.uri, registration.service_route, 1, 1),
                         asyncio.get_running_loop().create_future())
        self.watches[registration.core] = watch
        self.ended.pop(registration.core, None)
        response = await self.endpoint.request(subscribe, registration.core)
        if response.status >= 300:
            self.watches.pop(registration.core, None)
            return RegState("unknown", (), response.status, response.reason,
                            tuple(response.headers.get_all("Warning")))
        timers = self.endpoint.layer.timers
        return await asyncio.wait_for(asyncio.shield(watch.first), 64 * timers.t1)

    async def registration_ended(self, registrar: Address) -> RegState | None:
        """Wait for the NOTIFY that ends our subscription at ``registrar`` (after a
        de-REGISTER), at most a transaction timeout; None without a subscription."""
        watch = self.watches.get(registrar)
        if watch is None:
            return self.ended.pop(registrar, None)
        timers = self.endpoint.layer.timers
        await asyncio.wait_for(watch.ended.wait(), 64 * timers.t1)
        return watch.latest

    def on_cancel(self, request: Request, source: Address, transaction: TransactionKey) -> None:
        """§9.2: 200 when the INVITE is known (already answered here: no 487), else 481."""
        known = self.endpoint.layer.invite_for_cancel(request) is not None
        self.reply(request, transaction, 200 if known else 481)

    def on_ack(self, request: Request, source: Address) -> None:
        self.unacked.acknowledged(request.call_id)

    def answer(self, invite: Request, transaction: TransactionKey) -> None:
        """Accept a private call with an SDP answer (§13.3), Record-Route copied (§12.1.1)."""
        if not invite.contacts:
            self.reply(invite, transaction, 400, "Bad Request (INVITE without Contact)")
            return
        existing = self._dialogs.get(invite.call_id)
        if invite.to.tag is not None:
            # A re-INVITE (§14.2): the dialog stays, with its tags; unknown ones get 481.
            if existing is None or existing.local.tag != invite.to.tag:
                self.reply(invite, transaction, 481)
                return
            dialog, tag = existing, invite.to.tag
        else:
            tag = new_tag()
            dialog = Dialog.as_uas(invite, tag)
            self._dialogs[invite.call_id] = dialog
            self.calls_answered.append(invite.from_.uri.aor)
        response = invite.make_response(200, to_tag=tag)
        for value in invite.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Contact", self.contact())
        # An MCPTT offer has the floor-control line (24.379 §6.2); the answer keeps it.
        port, session_id = self.media.allocate()
        answer = floor_control_sdp(self.host, port, session_id, session="MCPTT call") \
            if b" MCPTT\r\n" in invite.body else sdp(self.host, port, session_id)
        response.set_body(answer, "application/sdp")
        self.endpoint.send_response(response, transaction)
        self.unacked.start(invite.call_id, response, transaction)

    def on_stray_response(self, response: Response, source: Address) -> None:
        # A retransmitted 2xx to our INVITE: re-send the ACK (§13.2.2.4).
        dialog = self._dialogs.get(response.call_id)
        if dialog is not None and response.cseq.method == "INVITE" and response.status < 300:
            ack = dialog.request("ACK", self.endpoint.make_via(self.transport),
                                 cseq=dialog.invite_cseq)
            self.endpoint.send_stateless(ack, dialog.next_hop())

    # -- outgoing --------------------------------------------------------------
    def new_request(self, method: str, target: URI, *, route: tuple[str, ...] = (),
                    identity: str) -> Request:
        return new_request(method, target, via=self.endpoint.make_via(self.transport),
                           from_=NameAddress.build(identity), to=NameAddress(target),
                           call_id=new_call_id(self.host), routes=route)

    def register_request(self, registrar: Address, impu: str, *, domain: str | None = None,
                         expires: int = 3600,
                         services: tuple[str, ...] = ("mcptt", "mcdata", "mcvideo"),
                         headers: tuple[tuple[str, str], ...] = (),
                         parts: tuple[BodyPart, ...] = ()) -> Request:
        """A REGISTER of ``impu`` at ``registrar`` (§10.2): To and From are the IMPU, the
        Request-URI the registrar's ``domain`` (default: the IMPU's).  One Call-ID per
        registrar, CSeq one higher each time, so refreshes are ordered (§10.2.4)."""
        if expires == 0:  # a de-REGISTER: only the subscription's end it brings counts
            self.ended.pop(registrar, None)
        call_id, cseq = self._registrations.get(registrar, (new_call_id(self.host), 0))
        self._registrations[registrar] = (call_id, cseq + 1)
        identity = NameAddress.build(impu)
        request = new_request(
            "REGISTER", URI("sip", host=domain or identity.uri.host),
            via=self.endpoint.make_via(registrar.transport), from_=identity, to=identity,
            call_id=call_id, cseq=cseq + 1)
        request.headers.add("Contact", Contact(self.contact(services)))
        request.headers.add("Expires", expires)
        request.headers.add("Supported", "path")
        for name, value in headers:
            request.headers.add(name, value)
        if len(parts) == 1:  # 24.379 §6.5: a single body is not wrapped
            request.set_body(parts[0].content, parts[0].content_type)
        elif parts:
            body = MultipartBody.build(list(parts))
            request.set_body(body.to_bytes(), body.content_type)
        return request

    async def register(self, registrar: Address, impu: str, **kwargs: Any) -> Registration:
        """Send a REGISTER (see :meth:`register_request`) and wait for its final response."""
        request = self.register_request(registrar, impu, **kwargs)
        response = await self.endpoint.request(request, registrar)
        return Registration(registrar, request.uri.host, impu, response,
                            tuple(response.headers.values("Service-Route")))

    async def unregister(self, registrar: Address, impu: str, **kwargs: Any) -> Registration:
        return await self.register(registrar, impu, expires=0, **kwargs)

    async def private_call(self, callee: str, registration: Registration, *,
                           hold: float = 0.05, service: str = "mcptt",
                           psi: str | None = None, session_type: str = "private"
                           ) -> CallRecord:
        """INVITE with SDP, 200, ACK, then BYE (24.379 private call, simplified); with
        ``service="mcvideo"``, an MCVideo one (24.281: its ICSI and mcvideo-info)."""
        fmt, icsi = (mcx_info.MCVIDEO, ICSI_MCVIDEO) if service == "mcvideo" else \
            (mcx_info.MCPTT, ICSI_MCPTT)
        record = CallRecord(callee)
        # 24.379 §11.1.1.2: to the MC server's PSI, the called party (or, for a group call,
        # the group) in mcptt-info; without a PSI, straight to the callee (the old way).
        invite = self.new_request("INVITE", URI.parse(psi or callee),
                                  route=registration.service_route, identity=registration.impu)
        invite.headers.add("Contact", self.contact())
        invite.headers.add("P-Preferred-Identity", NameAddress.build(registration.impu))
        invite.headers.add("P-Preferred-Service", icsi)
        invite.headers.add("Accept-Contact", f"*;+g.3gpp.{fmt.service};require;explicit")
        info = mcx_info.render(mcx_info.ServiceInfo(
            fmt, None, callee, None, session_type=session_type if psi else None))
        port, session_id = self.media.allocate()
        offer = floor_control_sdp(self.host, port, session_id,
                                  session=f"MCPTT {session_type or 'private'} call") \
            if fmt is mcx_info.MCPTT else sdp(self.host, port, session_id)
        body = MultipartBody.build([BodyPart("application/sdp", offer),
                                    BodyPart(fmt.mime_type, info)])
        invite.set_body(body.to_bytes(), body.content_type)
        response = await self.endpoint.request(
            invite, registration.core, on_provisional=lambda r: record.events.append(str(r.status)))
        record.invite_status = response.status
        if response.status >= 300:
            record.warnings = tuple(response.headers.get_all("Warning"))
            return record
        dialog = Dialog.as_uac(invite, response)
        self._dialogs[invite.call_id] = dialog
        ack = dialog.request("ACK", self.endpoint.make_via(self.transport),
                             cseq=dialog.invite_cseq)
        self.endpoint.send_stateless(ack, dialog.next_hop())
        await asyncio.sleep(hold)  # the call is up; no media in this emulator yet
        bye = dialog.request("BYE", self.endpoint.make_via(self.transport))
        record.bye_status = (await self.endpoint.request(bye, dialog.next_hop())).status
        self._dialogs.pop(invite.call_id, None)
        return record

    async def send_short_data(self, target: str, text: str, registration: Registration,
                              *, mcdata_id: str | None, psi: str | None = None) -> Response:
        """A standalone SDS (24.282 §9.2.2, signalling control plane): a MESSAGE to the
        MCData server's PSI with mcdata-info (the target's MCData ID, ours as calling user),
        the SDS signalling payload and the data payload (24.282 §15.1.2, §15.1.4)."""
        message = self.new_request("MESSAGE", URI.parse(psi or target),
                                   route=registration.service_route, identity=registration.impu)
        message.headers.add("P-Preferred-Identity", NameAddress.build(registration.impu))
        message.headers.add("P-Preferred-Service", ICSI_MCDATA_SDS)
        info = mcx_info.render(mcx_info.ServiceInfo(mcx_info.MCDATA, None, target, None,
                                                    calling_user_id=mcdata_id))
        signalling = mcdata.SdsSignalling(int(self.endpoint.wall_clock()), uuid.uuid4(),
                                          uuid.uuid4())
        body = MultipartBody.build([
            BodyPart(mcx_info.MCDATA.mime_type, info),
            BodyPart(mcdata.SIGNALLING_MIME_TYPE, signalling.encode()),
            BodyPart(mcdata.PAYLOAD_MIME_TYPE, mcdata.text_payload(text).encode())])
        message.set_body(body.to_bytes(), body.content_type)
        return await self.endpoint.request(message, registration.core)


def _self_signed_context(host: str) -> ssl.SSLContext:
    import datetime as dt
    import tempfile
    from pathlib import Path

    from emulator.identity.pki import issue_server_certificate
    from emulator.identity.pki import make_ca
    from emulator.keystore import write_credential
    from emulator.transport.tls import server_context

    now = dt.datetime.now(dt.UTC)
    credential = issue_server_certificate(make_ca("UE", now=now), "ue", hosts=[host], now=now)
    with tempfile.TemporaryDirectory(prefix="mcx-ue-") as directory:
        return server_context(*write_credential(Path(directory), "ue", credential))


def sdp(host: str, port: int, session_id: int) -> bytes:
    """An SDP offer/answer for one audio stream (RFC 4566)."""
    return (f"v=0\r\no=- {session_id} 1 IN IP4 {host}\r\ns=MCPTT private call\r\n"
            f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 96\r\n"
            f"a=rtpmap:96 AMR-WB/16000\r\n").encode()


class UserEquipment:
    """The migrating MC service UE, with its IdM, CM and MC service clients.

    Built from its plan: the user's credentials and OIDC client, its home
    address and SIP transport (its listener), and the CAs it trusts.
    """

    def __init__(self, plan: NodePlan, *, tap: Tap | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``, when given, is used instead of one made from the plan's CAs (a
        load run's thousands of UEs share one)."""
        options = plan.options
        assert isinstance(options, UeOptions) and plan.sip_listeners
        self.plan = plan
        self.name = plan.name
        self.username = options.username
        self.password = options.password
        self.home_host = plan.host
        self.client_id = options.client_id
        self.redirect_uri = options.redirect_uri
        self.transport = plan.sip_listeners[0].protocol
        ssl_context = ssl_context or tls_client(plan.credentials)
        assert ssl_context is not None, "a UE trusts the CAs of the systems it visits"
        self.ssl = ssl_context
        self._tap = tap
        self.client_uuid = f"urn:uuid:{secrets.token_hex(4)}-0000-1000-8000-{secrets.token_hex(6)}"
        self.sip = McClient(plan.name, plan.host, self.transport, tap=tap, client_ssl=self.ssl,
                            impairments=plan.impairments, timers=plan.sip_timers)
        self.instance = self.sip.instance
        """RFC 5626 instance ID: the same device from home and from the local PLMN."""
        self.visited_sip: McClient | None = None
        self._impaired: dict[str, tuple[list[str], Impairment | None]] = {}
        """Links changed at run time, for a client made later (the visited one)."""
        self._registrations: dict[bool, Registration] = {}
        """At home (False) and from the local PLMN (True), for the calls made on them."""
        self.tokens: Tokens | None = None
        self.profile: profiles.UserProfile | None = None
        self.security_token: str | None = None
        self.partner_token: dict[str, object] | None = None
        self.visited_address: str | None = None
        self.visited_plmn: str | None = None
        """The local PLMN's id (MCC-MNC) from the attach answer."""
        self._https: dict[str, IdmClient] = {}
        """By local address: the open HTTPS clients (see :meth:`_http`)."""

    def __repr__(self) -> str:
        return f"<UserEquipment {self.name} {self.username}>"

    async def start(self) -> None:
        await self.sip.start()

    async def ready(self) -> None:
        await self.sip.ready()

    async def stop(self) -> None:
        await self.close_https()
        await self.sip.stop()
        if self.visited_sip is not None:
            await self.visited_sip.stop()

    def state(self) -> dict[str, object]:
        listening = self.sip.sip_state()
        if self.visited_sip is not None:
            listening += self.visited_sip.sip_state()
        return {**describe(self.plan, listening), "visited_address": self.visited_address}

    @asynccontextmanager
    async def _http(self, local: str) -> AsyncIterator[IdmClient]:
        """The UE's HTTPS client from ``local``, kept open between requests (HTTP/1.1
        persistent connections, RFC 9112 §9.3): one TLS handshake per server, not one per
        request.  Closed when the UE stops or gives the address back."""
        client = self._https.get(local)
        if client is None:
            client = IdmClient(self.client_id, self.redirect_uri, self.ssl, local_address=local)
            await client.__aenter__()
            self._https[local] = client
        yield client

    async def close_https(self, local: str | None = None) -> None:
        """End the HTTPS connections from ``local`` (every one when None); the next
        request opens new ones."""
        for address in [local] if local is not None else list(self._https):
            client = self._https.pop(address, None)
            if client is not None:
                await client.__aexit__(None, None, None)

    # -- at home ---------------------------------------------------------------
    async def login(self, issuer: str) -> Tokens:
        async with self._http(self.home_host) as client:
            self.tokens = await client.login(issuer, self.username, self.password)
        return self.tokens

    async def download_profile(self, cms_url: str, xui: str) -> profiles.UserProfile:
        assert self.tokens is not None
        async with self._http(self.home_host) as client:
            self.profile = await client.fetch_profile(cms_url, xui, self.tokens.access_token)
        return self.profile

    async def request_security_token(self, token_endpoint: str, partner: str) -> str:
        assert self.tokens is not None
        async with self._http(self.home_host) as client:
            self.security_token = await client.exchange_for_partner(
                token_endpoint, self.tokens.access_token, partner)
        return self.security_token

    # -- migration ---------------------------------------------------------------
    async def attach(self, attach_url: str, transport: str | None = None,
                     via: str | None = None) -> str:
        """Attach to the local PLMN: the gateway hands out the UE's address there.

        ``transport`` is the one the profile names for the partner's access (the
        UE-gateway link); the home transport is kept when none is given.  ``via`` is
        the address the UE already has on the access network (its radio attach in
        netns placement), which the request comes from; otherwise it comes from home.
        """
        async with self._http(via or self.home_host) as client:
            async with client.session.post(attach_url, json={"ue": self.name}) as response:
                body = await response.json(content_type=None)
                if response.status != 200 or not isinstance(body, dict):
                    error = body if isinstance(body, dict) else {}
                    raise Refusal(str(error.get("error", "attach_refused")),
                                  str(error.get("error_description", body)), response.status)
        self.visited_plmn = str(body.get("plmn_id") or "") or None
        # Attached to the local PLMN, the UE has left its home access: its connections
        # from there end (a later request from home opens new ones).
        await self.close_https(self.home_host)
        return await self.camp(str(body["ue_address"]), transport)

    async def detach(self, attach_url: str) -> str:
        """Leave the local PLMN (``DELETE /attach/<address>``, project-defined): the gateway
        frees the address and the UE's SIP client there stops."""
        address = self.visited_address
        if address is None:
            raise Refusal("not_attached", "the UE has not attached to a local PLMN", 0)
        async with self._http(address) as client:
            async with client.session.delete(f"{attach_url}/{address}") as response:
                body = await response.json(content_type=None)
                if response.status != 200 or not isinstance(body, dict):
                    error = body if isinstance(body, dict) else {}
                    raise Refusal(str(error.get("error", "detach_refused")),
                                  str(error.get("error_description", body)), response.status)
        self._registrations.pop(True, None)
        await self.close_https(address)
        visited, self.visited_sip = self.visited_sip, None
        self.visited_address = self.visited_plmn = None
        if visited is not None:
            await visited.stop()
        return address

    async def refresh_tokens(self, token_endpoint: str) -> Tokens:
        """Refresh the home tokens (33.180 B.5, RFC 6749 §6): a returning UE needs no new
        login while its refresh token lives."""
        assert self.tokens is not None and self.tokens.refresh_token is not None
        async with self._http(self.home_host) as client:
            self.tokens = await client.refresh(token_endpoint, self.tokens.refresh_token)
        return self.tokens

    async def refresh_partner_token(self, token_endpoint: str) -> dict[str, object]:
        """Refresh the partner access token at the partner IdMS, from the local PLMN (its
        refresh token rotates): for a long stay, before the token and registration end."""
        assert self.partner_token is not None
        refresh = str(self.partner_token.get("refresh_token", ""))
        async with self._http(self.visited_address or self.home_host) as client:
            tokens = await client.refresh(token_endpoint, refresh)
        self.partner_token = dict(tokens.raw)
        return self.partner_token

    async def camp(self, address: str, transport: str | None = None) -> str:
        """Use ``address`` on the local PLMN for SIP, as an attach does; alone, it is a UE on
        the access network that never attached (the gateway must refuse its SIP)."""
        self.visited_address = address
        self.visited_sip = McClient(self.name, address, transport or self.transport,
                                    tap=self._tap, client_ssl=self.ssl,
                                    impairments=self.plan.impairments, instance=self.instance,
                                    timers=self.plan.sip_timers)
        for peer, (hosts, impairment) in self._impaired.items():
            self.visited_sip.impair(peer, hosts, impairment)
        await self.visited_sip.start()
        return address

    async def request_partner_token(self, token_endpoint: str, *,
                                    security_token: str | None = None,
                                    scope: str | None = None) -> dict[str, object]:
        local = self.visited_address or self.home_host
        async with self._http(local) as client:
            self.partner_token = await client.partner_access_token(
                token_endpoint, security_token or self.security_token or "", scope=scope)
        return self.partner_token

    # -- SIP -----------------------------------------------------------------
    # The MC service client's procedures take and give plain data, so a UE in another
    # process (or namespace) is driven the same way through its control link.
    REMOTE_CALLS = frozenset({"login", "download_profile", "request_security_token", "attach",
                              "camp", "detach", "refresh_tokens", "refresh_partner_token",
                              "request_partner_token", "register",
                              "publish_service_authorisation", "private_call", "affiliate",
                              "group_call", "download_partner_profile", "download_group",
                              "send_short_data", "received", "impair"})

    def impair(self, peer: str, hosts: list[str], impairment: Impairment | None) -> None:
        """What the link to ``peer`` does to what this UE sends, from now on, from home and
        from the local PLMN alike."""
        self._impaired[peer] = (hosts, impairment)
        for client in (self.sip, self.visited_sip):
            if client is not None:
                client.impair(peer, hosts, impairment)

    def _client(self, visited: bool) -> McClient:
        if visited and self.visited_sip is None:
            raise Refusal("not_attached", "the UE has not attached to a local PLMN", 0)
        return self.visited_sip if visited and self.visited_sip else self.sip

    def access_network_info(self, visited: bool) -> str:
        """P-Access-Network-Info for the access actually used (RFC 7315 §5.4): the local
        PLMN's E-UTRAN cell after an attach; at home, the LAN the UE sits on (the emulator
        models no home radio access)."""
        if visited and self.visited_plmn:
            plmn = self.visited_plmn.replace("-", "")
            return f"3GPP-E-UTRAN-FDD; utran-cell-id-3gpp={plmn}ABCD0000001"
        return "IEEE-802.3"

    async def register(self, core: Address, domain: str, impu: str, impi: str, token: str,
                       ids: dict[str, str], *, visited: bool = False, expires: int = 3600,
                       via_p_cscf: bool = False, publish: bool = False,
                       subscribe: bool = True) -> SipOutcome:
        """REGISTER (24.229 §5.1.1.2) at home or (``visited``) from the local PLMN address,
        then, on a first registration there, SUBSCRIBE to its reg event (§5.1.1.3).

        Service authorisation (24.379 §7.2.1): one info body per MC service with the
        token in the REGISTER, or (``publish``) none there and a PUBLISH afterwards
        (:meth:`publish_service_authorisation`).  ``expires=0`` de-registers and waits
        for the NOTIFY that ends the subscription.
        """
        headers = [
            ("Authorization", f'Digest username="{impi}", realm="{domain}", '
                              f'uri="sip:{domain}", nonce="", response=""'),
            ("P-Access-Network-Info", self.access_network_info(visited))]
        if via_p_cscf:
            # Offered to the P-CSCF, which strips it (no IPsec in the emulator).
            headers += [("Security-Client", "ipsec-3gpp; alg=hmac-sha-1-96; spi-c=1111; "
                                            "spi-s=2222; port-c=5062; port-s=5064"),
                        ("Require", "sec-agree"), ("Proxy-Require", "sec-agree")]
        services = tuple(fmt.service for fmt in (mcx_info.MCPTT, mcx_info.MCDATA,
                                                 mcx_info.MCVIDEO)
                         if ids.get(f"{fmt.service}_id") is not None)
        parts = () if publish or expires == 0 else self._info_parts(token, ids)
        client = self._client(visited)
        registration = await client.register(
            core, impu, domain=domain, expires=expires, services=services,
            headers=tuple(headers), parts=parts)
        state: RegState | None = None
        if registration.response.status < 300:
            if expires == 0:
                self._registrations.pop(visited, None)
                state = await client.registration_ended(core)
            else:
                self._registrations[visited] = registration
                if subscribe and core not in client.watches:
                    state = await client.subscribe_reg(registration)
        return SipOutcome.of(registration.response, state)

    async def publish_service_authorisation(self, psi: str, token: str, ids: dict[str, str],
                                            *, visited: bool = False,
                                            expires: int = 3600) -> SipOutcome:
        """24.379 §7.2.2 / §7.3.3: PUBLISH ``Event: poc-settings`` to the MC server's PSI
        on the registration, with poc-settings and the info bodies (tokens inside)."""
        registration = self._registration(visited)
        client = self._client(visited)
        publish = client.new_request("PUBLISH", URI.parse(psi), route=registration.service_route,
                                     identity=registration.impu)
        publish.headers.add("Event", poc_settings.EVENT)
        publish.headers.add("Expires", expires)
        publish.headers.add("P-Preferred-Identity", NameAddress.build(registration.impu))
        publish.headers.add("P-Preferred-Service", ICSI_MCPTT)
        publish.headers.add("Accept-Contact", "*;+g.3gpp.mcptt;require;explicit")
        settings = poc_settings.render(poc_settings.PocSettings(self.client_uuid, "automatic"))
        body = MultipartBody.build([BodyPart(poc_settings.MIME_TYPE, settings),
                                    *self._info_parts(token, ids)])
        publish.set_body(body.to_bytes(), body.content_type)
        return SipOutcome.of(await client.endpoint.request(publish, registration.core))

    def _info_parts(self, token: str, ids: dict[str, str]) -> tuple[BodyPart, ...]:
        parts = []
        for fmt in (mcx_info.MCPTT, mcx_info.MCDATA, mcx_info.MCVIDEO):
            service_id = ids.get(f"{fmt.service}_id")
            if service_id is not None:
                parts.append(BodyPart(fmt.mime_type, mcx_info.render(
                    mcx_info.ServiceInfo(fmt, token, service_id, self.client_uuid))))
        return tuple(parts)

    def _registration(self, visited: bool) -> Registration:
        registration = self._registrations.get(visited)
        if registration is None:
            raise Refusal("not_registered", "the UE has not registered there", 0)
        return registration

    async def private_call(self, callee: str, *, visited: bool = False,
                           service: str = "mcptt", psi: str | None = None) -> CallRecord:
        """A private call on the registration at home or (``visited``) in the partner; to
        the MC server's ``psi`` when given (24.379 §11.1.1)."""
        return await self._client(visited).private_call(callee, self._registration(visited),
                                                        service=service, psi=psi)

    async def send_short_data(self, target: str, text: str, *, visited: bool = False,
                              psi: str | None = None,
                              mcdata_id: str | None = None) -> SipOutcome:
        response = await self._client(visited).send_short_data(
            target, text, self._registration(visited), mcdata_id=mcdata_id, psi=psi)
        return SipOutcome.of(response)

    async def affiliate(self, groups: list[str], psi: str, mcptt_id: str, *,
                        visited: bool = False) -> SipOutcome:
        """Affiliate to ``groups`` (23.280 §10.8.3): PUBLISH ``Event: presence`` to the
        MCPTT server's PSI with our affiliation document (24.379 §9.2.2)."""
        registration = self._registration(visited)
        client = self._client(visited)
        publish = client.new_request("PUBLISH", URI.parse(psi), route=registration.service_route,
                                     identity=registration.impu)
        publish.headers.add("Event", affiliation.EVENT)
        publish.headers.add("Expires", 3600)
        publish.headers.add("P-Preferred-Identity", NameAddress.build(registration.impu))
        publish.headers.add("P-Preferred-Service", ICSI_MCPTT)
        document = affiliation.AffiliationDocument(
            mcptt_id, self.client_uuid, tuple(affiliation.Affiliation(g) for g in groups))
        publish.set_body(affiliation.render(document), affiliation.MIME_TYPE)
        return SipOutcome.of(await client.endpoint.request(publish, registration.core))

    async def group_call(self, group: str, psi: str, *, visited: bool = False) -> CallRecord:
        """A prearranged group call (24.379 §10.1.1.2): INVITE to the PSI, the group in
        mcptt-info, floor control offered; then ACK and BYE."""
        return await self._client(visited).private_call(
            group, self._registration(visited), psi=psi, session_type="prearranged")

    async def download_partner_profile(self, cms_url: str, xui: str) -> profiles.UserProfile:
        """The partner's user profile for us, with the partner token (23.280 §10.16.2
        steps 2-3), from the local PLMN."""
        assert self.partner_token is not None
        async with self._http(self.visited_address or self.home_host) as client:
            return await client.fetch_profile(cms_url, xui,
                                              str(self.partner_token["access_token"]))

    async def download_group(self, gms_url: str, group: str) -> group_documents.GroupDocument:
        """A partner group's document from the partner GMS (24.481), with the partner token."""
        assert self.partner_token is not None
        async with self._http(self.visited_address or self.home_host) as client:
            return await client.fetch_group(gms_url, group,
                                            str(self.partner_token["access_token"]))

    async def received(self) -> Received:
        clients = [c for c in (self.sip, self.visited_sip) if c is not None]
        return Received(
            tuple(caller for c in clients for caller in c.calls_answered),
            tuple(_text_of(m) for c in clients for m in c.messages))


def _text_of(message: Request) -> str:
    """What an SDS says: its data payload's text (24.282 §15.1.4), else the body as text."""
    try:
        payload = next((p for p in body_parts(message)
                        if p.mime_type == mcdata.PAYLOAD_MIME_TYPE), None)
        if payload is not None:
            return mcdata.DataPayload.decode(payload.content).text()
    except ValueError:  # a broken multipart body, payload or Content-Type: show the bytes
        pass
    return message.body.decode("utf-8", "replace")
