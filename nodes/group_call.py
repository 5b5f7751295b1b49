"""Prearranged group calls, the controlling MCPTT function's part (23.379 §10.6.2.3.1.1;
24.379 §10.1.1.4, simplified).

The MC server answers the caller's INVITE (to its PSI, ``<session-type>prearranged``,
the group in ``<mcptt-request-uri>``) as a back-to-back user agent: it INVITEs every
other *affiliated* member of the group through its SIP core (Route ``term``), answers the
caller 200 once the members have answered (at least one accepting, else 480), ACKs each
member, and ends every leg when the caller sends BYE.  As a UAS it re-sends its 200 until
the caller's ACK (RFC 3261 §13.3.1.4), ending the call if none comes; as a UAC it ACKs
each 2xx a member re-sends (§13.2.2.4).  Media and floor control are
offered in SDP only (no RTP here).

Simplified: no late entry, no re-INVITE, no "unconfirmed" answer before the members.
Bounded: :data:`MAX_CALLS` calls at once, :data:`MAX_LEGS` members per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from emulator.documents import groups
from emulator.documents import mcx_info
from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_request
from emulator.sip.builder import new_tag
from emulator.sip.dialog import Dialog
from emulator.sip.events import Address
from emulator.sip.events import TransactionKey
from emulator.sip.headers import NameAddress
from emulator.sip.headers import Via
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.sip.uri import URI

from .sipnode import AnswerRetransmitter
from .sipnode import SipNode

logger = logging.getLogger(__name__)

MAX_CALLS = 1000
MAX_LEGS = 64


def floor_control_sdp(host: str, audio_port: int, session_id: int, *,
                      session: str = "MCPTT group call") -> bytes:
    """An SDP with one audio stream and the floor-control ``m=application`` line
    (24.379 §6.2; 24.380 media-plane control, ``mc_queueing`` and ``mc_priority``).  Floor
    control takes the port after the audio's RTCP."""
    return (f"v=0\r\no=- {session_id} 1 IN IP4 {host}\r\ns={session}\r\n"
            f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio {audio_port} RTP/AVP 96\r\n"
            f"a=rtpmap:96 AMR-WB/16000\r\nm=application {audio_port + 2} udp MCPTT\r\n"
            f"a=fmtp:MCPTT mc_queueing;mc_priority=5\r\n").encode()


class MediaSessions:
    """A node's SDP sessions: each offer or answer gets an origin session id of its own
    (RFC 4566 §5.2: unique per session) and its own ports, four apiece (audio and its
    RTCP, floor control and its pair), cycling through :data:`SPAN` sets from ``base``.
    No media flows here yet, but two calls at once must not claim the same ports."""

    SPAN = 1000

    def __init__(self, base: int = 40000) -> None:
        self.base = base
        self._count = 0

    def allocate(self) -> tuple[int, int]:
        """(audio port, session id) for the next session."""
        self._count += 1
        return self.base + 4 * (self._count % self.SPAN), self._count


@dataclass
class Leg:
    member: str
    invite: Request
    dialog: Dialog | None = None
    status: int = 0


@dataclass
class GroupCall:
    group: str
    caller: str
    invite: Request
    transaction: TransactionKey
    tag: str
    legs: list[Leg] = field(default_factory=list)
    answered: bool = False


class GroupCalls:
    """The group calls one MC server controls, by the caller's Call-ID."""

    def __init__(self, node: SipNode, term_route: Callable[[], tuple[NameAddress, Address]]
                 ) -> None:
        self.node = node
        self.term_route = term_route
        """The SIP core's terminating Route and address, for the INVITEs to members."""
        self.calls: dict[str, GroupCall] = {}
        self._legs: dict[str, Leg] = {}
        """The members' legs that have a dialog, by its Call-ID (as bounded as the calls)."""
        self.unacked = AnswerRetransmitter(node)
        """The callers' 200s not yet acknowledged."""
        self.media = MediaSessions()

    def __len__(self) -> int:
        return len(self.calls)

    def start(self, invite: Request, transaction: TransactionKey, caller: str, group: str,
              members: list[str]) -> None:
        node = self.node
        if not invite.contacts:  # §8.1.1.8: the caller's dialog needs its Contact
            node.reply(invite, transaction, 400, "Bad Request (INVITE without Contact)")
            return
        if len(self.calls) >= MAX_CALLS:
            node.reply(invite, transaction, 503, "Service Unavailable (too many group calls)")
            return
        if not members:
            node.reply(invite, transaction, 480, "Temporarily Unavailable (no other member "
                                                 "of the group is affiliated)")
            return
        call = GroupCall(group, caller, invite, transaction, new_tag())
        self.calls[invite.call_id] = call
        route, core = self.term_route()
        for member in members[:MAX_LEGS]:
            leg = Leg(member, self._member_invite(call, member, route, core.transport))
            call.legs.append(leg)
            node.endpoint.send_request(leg.invite, core, self._on_answer(call, leg))

    def _on_answer(self, call: GroupCall, leg: Leg) -> Callable[[Response], None]:
        return lambda response: self._member_answered(call, leg, response)

    def _member_invite(self, call: GroupCall, member: str, route: NameAddress,
                       transport: str) -> Request:
        node = self.node
        target = URI.parse(member)
        invite = new_request("INVITE", target, via=node.endpoint.make_via(transport),
                             from_=NameAddress.build(call.caller), to=NameAddress(target),
                             call_id=new_call_id(node.host), routes=(route,))
        invite.headers.add("Contact", NameAddress(node.uri(transport=transport, lr=False)))
        invite.headers.add("P-Asserted-Identity", NameAddress.build(call.caller))
        invite.headers.add("P-Asserted-Service", groups.MCPTT_ICSI)
        info = mcx_info.render(mcx_info.ServiceInfo(
            mcx_info.MCPTT, None, member, None, session_type="prearranged",
            calling_user_id=call.caller, calling_group_id=call.group))
        body = MultipartBody.build([
            BodyPart("application/sdp", floor_control_sdp(node.host, *self.media.allocate())),
            BodyPart(mcx_info.MCPTT.mime_type, info)])
        invite.set_body(body.to_bytes(), body.content_type)
        return invite

    def _member_answered(self, call: GroupCall, leg: Leg, response: Response) -> None:
        if response.status < 200:
            return
        leg.status = response.status
        if response.status < 300:
            leg.dialog = Dialog.as_uac(leg.invite, response)
            self._legs[leg.dialog.call_id] = leg
            self._ack(leg.dialog)
            if call.answered or self.calls.get(call.invite.call_id) is not call:
                self._bye(leg)  # the call ended (or was answered) without waiting for it
                return
        if all(leg.status for leg in call.legs):
            self._answer(call)

    def _answer(self, call: GroupCall) -> None:
        node = self.node
        call.answered = True
        joined = [leg.member for leg in call.legs if leg.dialog is not None]
        if not joined:
            self.calls.pop(call.invite.call_id, None)
            node.reply(call.invite, call.transaction, 480,
                       "Temporarily Unavailable (no member accepted)")
            return
        response = call.invite.make_response(200, to_tag=call.tag)
        for value in call.invite.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
        transport = call.invite.top_via.transport.lower()
        response.headers.add("Contact", NameAddress(node.uri(transport=transport, lr=False)))
        response.set_body(floor_control_sdp(node.host, *self.media.allocate()), "application/sdp")
        logger.info("%s: group call %s from %s reached %s", node.name, call.group, call.caller,
                    ", ".join(joined))
        node.endpoint.send_response(response, call.transaction)
        self.unacked.start(call.invite.call_id, response, call.transaction,
                           lambda: self._unanswered(call))

    def _unanswered(self, call: GroupCall) -> None:
        """64·T1 without the caller's ACK: the session ends with a BYE (§13.3.1.4), to the
        caller and to every member."""
        if self.calls.pop(call.invite.call_id, None) is not call:
            return
        logger.info("%s: group call %s from %s never acknowledged: ended", self.node.name,
                    call.group, call.caller)
        for leg in call.legs:
            self._bye(leg)
        self._end(Dialog.as_uas(call.invite, call.tag))

    def on_member_2xx(self, response: Response) -> bool:
        """A member's 2xx again (our ACK was lost): ACK it again (§13.2.2.4)."""
        leg = self._legs.get(response.call_id)
        if leg is None or leg.dialog is None:
            return False
        self._ack(leg.dialog)
        return True

    # -- in the caller's dialog ------------------------------------------------------
    def on_ack(self, request: Request) -> bool:
        self.unacked.acknowledged(request.call_id)
        return request.call_id in self.calls

    def on_bye(self, request: Request, transaction: TransactionKey) -> bool:
        """The caller hangs up: 200, and every member's leg ends."""
        call = self.calls.pop(request.call_id, None)
        if call is None:
            return False
        self.unacked.acknowledged(request.call_id)
        self.node.reply(request, transaction, 200)
        for leg in call.legs:
            self._bye(leg)
        return True

    def on_member_bye(self, request: Request, transaction: TransactionKey) -> bool:
        """A member leaves the call: its leg ends, the call goes on."""
        leg = self._legs.pop(request.call_id, None)
        if leg is None:
            return False
        leg.dialog = None
        self.node.reply(request, transaction, 200)
        return True

    def _bye(self, leg: Leg) -> None:
        dialog, leg.dialog = leg.dialog, None
        if dialog is not None:
            self._legs.pop(dialog.call_id, None)
            self._end(dialog)

    def _ack(self, dialog: Dialog) -> None:
        """The ACK of a member's 2xx, end to end along the dialog (§13.2.2.4)."""
        ack = dialog.request("ACK", self._via(dialog), cseq=dialog.invite_cseq)
        self.node.endpoint.send_stateless(ack, dialog.next_hop())

    def _end(self, dialog: Dialog) -> None:
        bye = dialog.request("BYE", self._via(dialog))
        self.node.endpoint.send_request(bye, dialog.next_hop(), lambda response: None)

    def _via(self, dialog: Dialog) -> Via:
        return self.node.endpoint.make_via(dialog.next_hop().transport)
