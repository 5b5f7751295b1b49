"""The RFC 3261 §17 transaction layer in simulated time (no sleeps, no sockets).

Each test names the state machine figure it walks: Figure 5 (INVITE client,
with RFC 6026's Accepted state), Figure 6 (non-INVITE client), Figure 7
(INVITE server, with Accepted), Figure 8 (non-INVITE server).  Default timers:
T1 = 0.5 s, T2 = 4 s, T4 = 5 s.
"""

from __future__ import annotations

import gc
from itertools import pairwise

import pytest

from emulator.sip import Address
from emulator.sip import LocalProtocolError
from emulator.sip import MessageDropped
from emulator.sip import Request
from emulator.sip import RequestReceived
from emulator.sip import Response
from emulator.sip import ResponseReceived
from emulator.sip import State
from emulator.sip import TimerConfig
from emulator.sip import TransactionLayer
from emulator.sip import TransactionTimedOut
from emulator.sip import TransportFailed
from emulator.sip import parse_message

from .support import Wire
from .support import advance
from .support import drain
from .support import make_request

T1, T2, T4 = 0.5, 4.0, 5.0
PEER = Address("udp", "192.0.2.2", 5060)
UAC = Address("udp", "192.0.2.1", 5060)


def layer() -> TransactionLayer:
    return TransactionLayer(timers=TimerConfig())


def intervals(times: list[float], start: float = 0.0) -> list[float]:
    return [b - a for a, b in pairwise([start, *times])]


def only(events: list[object], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def server_request(wire: Wire, method: str = "INVITE", now: float = 0.0, **kw: object) -> tuple:
    """Send ``method`` from the wire's client; return (client key, server event)."""
    key = wire.client.send_request(make_request(method, transport=wire.client_addr.transport,
                                                **kw), wire.server_addr, now=now)  # type: ignore[arg-type]
    wire.pump(now)
    (event,) = only(drain(wire.server), RequestReceived)
    return key, event


def test_timer_values_table_4() -> None:
    """RFC 3261 Table 4 and RFC 6026 Timers L and M."""
    t = TimerConfig()
    assert (t.t1, t.t2, t.t4) == (T1, T2, T4)
    assert t.timer_a() == t.timer_e() == t.timer_g() == T1
    assert t.timer_b() == t.timer_f() == t.timer_h() == t.timer_l() == t.timer_m() == 32.0
    assert (t.timer_d(False), t.timer_d(True)) == (32.0, 0.0)
    assert (t.timer_i(False), t.timer_i(True)) == (T4, 0.0)
    assert (t.timer_j(False), t.timer_j(True)) == (32.0, 0.0)
    assert (t.timer_k(False), t.timer_k(True)) == (T4, 0.0)
    assert TimerConfig(t1=0.1).timer_d(False) == 32.0  # "at least 32 s"
    assert TimerConfig(t1=1.0).timer_b() == 64.0


# ====================================================================== Figure 6
def test_nict_timer_e_doubles_to_t2_and_timer_f_times_out_at_32s() -> None:
    """Figure 6, Trying: E = 0.5, 1, 2, 4, 4, ... (capped at T2); F at 64*T1."""
    client = layer()
    request = make_request("REGISTER")
    key = client.send_request(request, PEER, now=0.0)
    (first, destination), = client.messages_to_send()
    assert destination == PEER
    sent = advance(client, 31.999)
    times = [t for t, _ in sent]
    assert intervals(times) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(data == first for _, data in sent)  # a retransmission is the same bytes
    assert drain(client) == []
    assert client.transaction_state(key) == State.TRYING
    client.handle_timer(now=32.0)
    (event,) = drain(client)
    assert isinstance(event, TransactionTimedOut)
    assert (event.transaction, event.timer, event.request) == (key, "F", request)
    assert len(client) == 0 and client.get_timer() is None
    assert client.transaction_state(key) == State.TERMINATED


def test_nict_proceeding_retransmits_every_t2() -> None:
    """Figure 6, Proceeding: a 1xx makes E fire every T2 until F."""
    wire = Wire()
    key, event = server_request(wire, "MESSAGE")
    wire.server.send_response(event.request.make_response(100), now=0.1)
    wire.pump(0.1)
    (provisional,) = drain(wire.client)
    assert isinstance(provisional, ResponseReceived) and provisional.response.status == 100
    assert wire.client.transaction_state(key) == State.PROCEEDING
    sent = advance(wire.client, 31.999)
    times = [t for t, _ in sent]
    assert times[0] == 0.5  # the E armed in Trying still fires ...
    assert set(intervals(times[1:], times[0])) == {T2}  # ... then every T2
    wire.client.messages_to_send()
    wire.client.handle_timer(now=32.0)
    (timeout,) = drain(wire.client)
    assert isinstance(timeout, TransactionTimedOut) and timeout.timer == "F"


def test_nict_no_retransmissions_over_tcp() -> None:
    """§17.1.2.2: Timer E is not armed on reliable transports; F still runs."""
    client = layer()
    key = client.send_request(make_request("OPTIONS", transport="tcp"),
                              Address("tcp", "192.0.2.2", 5060), now=0.0)
    assert len(client.messages_to_send()) == 1
    assert advance(client, 31.9) == []
    client.handle_timer(now=32.0)
    assert [type(e) for e in drain(client)] == [TransactionTimedOut]
    assert client.transaction_state(key) == State.TERMINATED


def test_nict_timer_k_is_t4_on_udp_then_purged() -> None:
    """Figure 6, Completed: retransmitted finals are absorbed for T4, then Terminated."""
    wire = Wire()
    key, event = server_request(wire, "REGISTER")
    final = event.request.make_response(200, to_tag="reg")
    wire.server.send_response(final, now=1.0)
    wire.pump(1.0)
    (response,) = drain(wire.client)
    assert isinstance(response, ResponseReceived) and response.transaction == key
    assert wire.client.transaction_state(key) == State.COMPLETED
    # The final response arrives again (the server's copy was duplicated): absorbed.
    wire.client.receive(final.to_bytes(), wire.server_addr, now=2.0)
    assert drain(wire.client) == []
    assert advance(wire.client, 1.0 + T4 - 0.001) == []  # no retransmission in Completed
    assert len(wire.client) == 1
    wire.client.handle_timer(now=1.0 + T4)
    assert len(wire.client) == 0
    assert drain(wire.client) == []  # Timer K ends silently


def test_nict_timer_k_is_zero_on_tcp() -> None:
    """Figure 6 on a reliable transport: Completed lasts zero seconds."""
    wire = Wire("tcp")
    key, event = server_request(wire, "REGISTER")
    wire.server.send_response(event.request.make_response(200, to_tag="t"), now=0.2)
    wire.pump(0.2)
    assert [type(e) for e in drain(wire.client)] == [ResponseReceived]
    assert len(wire.client) == 0
    assert wire.client.transaction_state(key) == State.TERMINATED


# ====================================================================== Figure 5
def test_ict_timer_a_doubles_without_cap_and_timer_b_times_out() -> None:
    """Figure 5, Calling: A = 0.5, 1, 2, 4, 8, 16 (no T2 cap); B at 64*T1."""
    client = layer()
    key = client.send_request(make_request("INVITE"), PEER, now=0.0)
    client.messages_to_send()
    sent = advance(client, 31.999)
    assert intervals([t for t, _ in sent]) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert client.transaction_state(key) == State.CALLING
    client.handle_timer(now=32.0)
    (event,) = drain(client)
    assert isinstance(event, TransactionTimedOut) and event.timer == "B"
    assert len(client) == 0


def test_ict_provisional_stops_timer_a() -> None:
    """Figure 5: Calling -> Proceeding on 1xx; no more retransmissions."""
    wire = Wire()
    key, _ = server_request(wire, "INVITE")  # the server answers 100 Trying at once
    (trying,) = drain(wire.client)
    assert isinstance(trying, ResponseReceived) and trying.response.status == 100
    assert wire.client.transaction_state(key) == State.PROCEEDING
    assert advance(wire.client, 60.0) == []
    assert drain(wire.client) == []  # Timer B does not apply in Proceeding
    assert wire.client.transaction_state(key) == State.PROCEEDING


def test_ict_non_2xx_final_generates_the_ack() -> None:
    """Figure 5 / §17.1.1.3: ACK with the INVITE's branch, the response's To tag, CSeq n ACK."""
    wire = Wire()
    routes = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    invite = make_request("INVITE", cseq=7, routes=routes,
                          extra_vias=("SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKlower",))
    key = wire.client.send_request(invite, wire.server_addr, now=0.0)
    wire.pump(0.0)
    (server_event,) = only(drain(wire.server), RequestReceived)
    drain(wire.client)
    wire.server.send_response(server_event.request.make_response(486, to_tag="busy-1"), now=1.0)
    (busy, _), = wire.server.messages_to_send()
    wire.client.receive(busy, wire.server_addr, now=1.0)
    (event,) = drain(wire.client)
    assert isinstance(event, ResponseReceived) and event.response.status == 486
    assert wire.client.transaction_state(key) == State.COMPLETED
    (ack_bytes, destination), = wire.client.messages_to_send()
    assert destination == wire.server_addr
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.get("Via")]  # only the top Via
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.to.tag == "busy-1"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.call_id == invite.call_id
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.headers.get_all("Route") == list(routes)
    assert ack.body == b""
    # The ACK reaches the server transaction: Completed -> Confirmed (Figure 7).
    wire.server.receive(ack_bytes, wire.client_addr, now=1.0)
    assert drain(wire.server) == []  # an ACK for a non-2xx is not for the TU
    assert wire.server.transaction_state(server_event.transaction) == State.CONFIRMED


def test_ict_retransmitted_final_resends_ack_and_is_not_reported_twice() -> None:
    """Figure 5, Completed: 300-699 from the transport -> send ACK again, not to the TU."""
    wire = Wire()
    _, server_event = server_request(wire, "INVITE")
    drain(wire.client)
    wire.server.send_response(server_event.request.make_response(603, to_tag="d"), now=1.0)
    (decline, _), = wire.server.messages_to_send()
    wire.client.receive(decline, wire.server_addr, now=1.0)
    (ack, _), = wire.client.messages_to_send()
    assert len(only(drain(wire.client), ResponseReceived)) == 1
    for n in range(3):
        wire.client.receive(decline, wire.server_addr, now=2.0 + n)
        assert wire.client.messages_to_send() == [(ack, wire.server_addr)]
    assert drain(wire.client) == []


@pytest.mark.parametrize(("transport", "timer_d"), [("udp", 32.0), ("tcp", 0.0)])
def test_ict_timer_d(transport: str, timer_d: float) -> None:
    """Figure 5: Completed lasts Timer D (>= 32 s on UDP, 0 on TCP)."""
    wire = Wire(transport)
    key, server_event = server_request(wire, "INVITE")
    wire.server.send_response(server_event.request.make_response(404, to_tag="n"), now=1.0)
    wire.pump(1.0)
    assert wire.client.messages_to_send() == []
    if timer_d == 0.0:
        assert len(wire.client) == 0
        return
    wire.client.handle_timer(now=1.0 + timer_d - 0.001)
    assert wire.client.transaction_state(key) == State.COMPLETED
    wire.client.handle_timer(now=1.0 + timer_d)
    assert len(wire.client) == 0
    assert wire.client.messages_to_send() == []  # Completed never retransmits the ACK by itself
    statuses = [e.response.status for e in drain(wire.client)]  # type: ignore[attr-defined]
    assert statuses == [100, 404]  # Timer D ends silently: no TransactionTimedOut


def test_ict_2xx_moves_to_accepted_and_retransmitted_2xx_reaches_the_tu() -> None:
    """Figure 5 as amended by RFC 6026: 2xx -> Accepted; later 2xx go to the TU; Timer M."""
    wire = Wire()
    key, server_event = server_request(wire, "INVITE")
    drain(wire.client)
    ok = server_event.request.make_response(200, to_tag="ok-1")
    wire.server.send_response(ok, now=1.0)
    (ok_bytes, _), = wire.server.messages_to_send()
    wire.client.receive(ok_bytes, wire.server_addr, now=1.0)
    (first,) = drain(wire.client)
    assert isinstance(first, ResponseReceived) and first.transaction == key
    assert wire.client.transaction_state(key) == State.ACCEPTED
    assert wire.client.messages_to_send() == []  # the ACK to a 2xx is the TU's (§13.2.2.4)
    wire.client.receive(ok_bytes, wire.server_addr, now=3.0)
    (again,) = drain(wire.client)
    assert isinstance(again, ResponseReceived) and again.transaction == key
    # A 2xx from another branch of a forked INVITE also reaches the TU (RFC 6026 §8.4).
    other = parse_message(ok_bytes)
    other.headers.set("To", str(other.to.with_tag("ok-2")))
    wire.client.receive(other.to_bytes(), wire.server_addr, now=4.0)
    assert [e.response.to.tag for e in drain(wire.client)] == ["ok-2"]  # type: ignore[attr-defined]
    wire.client.handle_timer(now=1.0 + 32.0 - 0.001)
    assert len(wire.client) == 1
    wire.client.handle_timer(now=1.0 + 32.0)  # Timer M = 64*T1
    assert len(wire.client) == 0
    # After Timer M a 2xx is a stray for the TU (it re-sends its ACK).
    wire.client.receive(ok_bytes, wire.server_addr, now=40.0)
    (stray,) = drain(wire.client)
    assert isinstance(stray, ResponseReceived) and stray.transaction is None


def test_ict_ack_for_2xx_is_sent_statelessly_by_the_tu() -> None:
    """Figure 5 note / §13.2.2.4: the UAC core sends the 2xx ACK outside any transaction."""
    client = layer()
    ack = make_request("ACK")
    with pytest.raises(LocalProtocolError):
        client.send_request(ack, PEER, now=0.0)
    client.send_stateless(ack, PEER)
    assert client.messages_to_send() == [(ack.to_bytes(), PEER)]
    assert len(client) == 0


# ====================================================================== Figure 7
def test_ist_sends_100_trying_at_once() -> None:
    """§17.2.1: the server transaction answers 100 Trying (no To tag, Timestamp copied)."""
    server = layer()
    invite = make_request("INVITE")
    invite.headers.add("Timestamp", "12.5")
    server.receive(invite.to_bytes(), UAC, now=0.0)
    (event,) = drain(server)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert server.transaction_state(event.transaction) == State.PROCEEDING
    (trying_bytes, destination), = server.messages_to_send()
    assert destination == UAC
    trying = parse_message(trying_bytes)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "12.5"
    assert trying.top_via.branch == invite.top_via.branch
    assert trying.cseq == invite.cseq and trying.call_id == invite.call_id
    # A retransmitted INVITE in Proceeding gets the 100 again and is not a new request.
    server.receive(invite.to_bytes(), UAC, now=0.5)
    assert server.messages_to_send() == [(trying_bytes, UAC)]
    assert drain(server) == []


def test_ist_without_auto_trying_stays_silent() -> None:
    """Figure 7 when the TU promises to answer within 200 ms itself (§17.2.1)."""
    server = TransactionLayer(auto_trying=False)
    server.receive(make_request("INVITE").to_bytes(), UAC, now=0.0)
    assert [type(e) for e in drain(server)] == [RequestReceived]
    assert server.messages_to_send() == []


def test_ist_timer_g_retransmits_final_until_timer_h() -> None:
    """Figure 7, Completed: G = 0.5, 1, 2, 4, 4, ... (capped at T2); H at 64*T1 without ACK."""
    server = layer()
    server.receive(make_request("INVITE").to_bytes(), UAC, now=0.0)
    (event,) = drain(server)
    server.messages_to_send()
    server.send_response(event.request.make_response(486, to_tag="b"), now=0.0)
    (busy, _), = server.messages_to_send()
    assert server.transaction_state(event.transaction) == State.COMPLETED
    sent = advance(server, 31.999)
    assert intervals([t for t, _ in sent]) == [0.5, 1.0, 2.0, 4.0] + [4.0] * 6
    assert all(data == busy for _, data in sent)
    server.handle_timer(now=32.0)
    (timeout,) = drain(server)
    assert isinstance(timeout, TransactionTimedOut) and timeout.timer == "H"
    assert timeout.transaction == event.transaction
    assert len(server) == 0


@pytest.mark.parametrize(("transport", "timer_i"), [("udp", T4), ("tcp", 0.0)])
def test_ist_ack_confirms_then_timer_i_purges(transport: str, timer_i: float) -> None:
    """Figure 7: ACK -> Confirmed, G and H stop; Timer I = T4 (0 on TCP) -> Terminated."""
    wire = Wire(transport)
    _key, event = server_request(wire, "INVITE")
    wire.server.send_response(event.request.make_response(480, to_tag="u"), now=1.0)
    wire.pump(1.0)  # the client's transaction ACKs automatically
    if timer_i == 0.0:
        assert len(wire.server) == 0
        return
    assert wire.server.transaction_state(event.transaction) == State.CONFIRMED
    assert advance(wire.server, 1.0 + T4 - 0.001) == []  # no more G retransmissions
    assert drain(wire.server) == []  # and no Timer H
    # A retransmitted ACK in Confirmed is absorbed.
    assert wire.delivered[-1].startswith(b"ACK ")
    wire.server.receive(wire.delivered[-1], wire.client_addr, now=2.0)
    assert drain(wire.server) == [] and wire.server.messages_to_send() == []
    wire.server.handle_timer(now=1.0 + T4)
    assert len(wire.server) == 0


def test_ist_no_timer_g_on_tcp() -> None:
    """§17.2.1: the final response is retransmitted only on unreliable transports."""
    server = layer()
    tcp_uac = Address("tcp", "192.0.2.1", 5060)
    server.receive(make_request("INVITE", transport="tcp").to_bytes(), tcp_uac, now=0.0,
                   stream=True)
    (event,) = drain(server)
    server.send_response(event.request.make_response(500), now=0.0)
    server.messages_to_send()
    assert advance(server, 31.9) == []
    server.handle_timer(now=32.0)
    assert [e.timer for e in drain(server)] == ["H"]  # type: ignore[attr-defined]


def test_ist_retransmitted_invite_gets_the_last_response() -> None:
    """Figure 7: INVITE from the transport in Proceeding/Completed -> resend the last response."""
    server = layer()
    invite = make_request("INVITE").to_bytes()
    server.receive(invite, UAC, now=0.0)
    (event,) = drain(server)
    server.messages_to_send()
    server.send_response(event.request.make_response(180, to_tag="r"), now=0.1)
    (ringing, _), = server.messages_to_send()
    server.receive(invite, UAC, now=0.2)
    assert server.messages_to_send() == [(ringing, UAC)]
    server.send_response(event.request.make_response(486, to_tag="r"), now=0.3)
    (busy, _), = server.messages_to_send()
    server.receive(invite, UAC, now=0.4)
    assert server.messages_to_send() == [(busy, UAC)]
    assert drain(server) == []
    with pytest.raises(LocalProtocolError):  # a second final response is a TU bug
        server.send_response(event.request.make_response(200, to_tag="r"), now=0.5)


def test_ist_2xx_accepted_and_ack_with_new_branch_goes_to_tu() -> None:
    """Figure 7 with RFC 6026: 2xx -> Accepted; the 2xx ACK (new branch) -> TU, no transaction."""
    wire = Wire()
    _, event = server_request(wire, "INVITE")
    ok = event.request.make_response(200, to_tag="acc")
    wire.server.send_response(ok, now=1.0)
    assert wire.server.transaction_state(event.transaction) == State.ACCEPTED
    (ok_bytes, _), = wire.server.messages_to_send()
    # The TU (not the transaction) retransmits the 2xx while in Accepted.
    assert advance(wire.server, 10.0) == []
    wire.server.send_response(ok, now=10.0)
    assert wire.server.messages_to_send() == [(ok_bytes, wire.client_addr)]
    with pytest.raises(LocalProtocolError):
        wire.server.send_response(event.request.make_response(486), now=10.0)
    # A retransmitted INVITE in Accepted is absorbed (RFC 6026 §8.7).
    wire.server.receive(event.request.to_bytes(), wire.client_addr, now=11.0)
    assert wire.server.messages_to_send() == [] and drain(wire.server) == []
    # The ACK to the 2xx carries a new branch: a new request for the TU, with no transaction.
    ack = make_request("ACK", cseq=1)
    ack.headers.set("To", str(parse_message(ok_bytes).to))
    wire.server.receive(ack.to_bytes(), wire.client_addr, now=12.0)
    (ack_event,) = drain(wire.server)
    assert isinstance(ack_event, RequestReceived)
    assert ack_event.request.method == "ACK" and ack_event.transaction is None
    assert wire.server.messages_to_send() == []  # an ACK is never answered
    # Timer L = 64*T1 after the 2xx, then the transaction is gone.
    wire.server.handle_timer(now=1.0 + 32.0)
    assert len(wire.server) == 0


# ====================================================================== Figure 8
def test_nist_retransmission_in_trying_is_absorbed() -> None:
    """Figure 8, Trying: a retransmitted request is discarded, not passed to the TU."""
    server = layer()
    data = make_request("MESSAGE").to_bytes()
    server.receive(data, UAC, now=0.0)
    assert [type(e) for e in drain(server)] == [RequestReceived]
    server.receive(data, UAC, now=0.5)
    assert drain(server) == [] and server.messages_to_send() == []
    assert len(server) == 1


def test_nist_retransmission_in_proceeding_and_completed_resends_last_response() -> None:
    """Figure 8: Proceeding and Completed both repeat the most recent response."""
    server = layer()
    data = make_request("SUBSCRIBE").to_bytes()
    server.receive(data, UAC, now=0.0)
    (event,) = drain(server)
    server.send_response(event.request.make_response(100), now=0.1)
    (trying, _), = server.messages_to_send()
    assert server.transaction_state(event.transaction) == State.PROCEEDING
    server.receive(data, UAC, now=0.5)
    assert server.messages_to_send() == [(trying, UAC)]
    server.send_response(event.request.make_response(202, to_tag="s"), now=0.6)
    (accepted, _), = server.messages_to_send()
    assert server.transaction_state(event.transaction) == State.COMPLETED
    server.receive(data, UAC, now=1.5)
    assert server.messages_to_send() == [(accepted, UAC)]
    assert drain(server) == []
    assert advance(server, 30.0) == []  # no Timer G for non-INVITE: only on request


@pytest.mark.parametrize(("transport", "timer_j"), [("udp", 32.0), ("tcp", 0.0)])
def test_nist_timer_j(transport: str, timer_j: float) -> None:
    """Figure 8, Completed: Timer J = 64*T1 on UDP, 0 on TCP."""
    server = layer()
    uac = Address(transport, "192.0.2.1", 5060)
    server.receive(make_request("OPTIONS", transport=transport).to_bytes(), uac, now=0.0,
                   stream=transport != "udp")
    (event,) = drain(server)
    server.send_response(event.request.make_response(200, to_tag="o"), now=2.0)
    if timer_j == 0.0:
        assert len(server) == 0
        return
    server.handle_timer(now=2.0 + timer_j - 0.001)
    assert server.transaction_state(event.transaction) == State.COMPLETED
    server.handle_timer(now=2.0 + timer_j)
    assert len(server) == 0 and drain(server) == []


def test_completed_non_invite_transactions_leave_nothing_for_the_collector() -> None:
    """Figures 6 and 8, Completed: a node holds thousands for Timer J (32 s), so what each
    keeps (the last response's bytes, the peer, the timer) is one plain tuple, which a
    full garbage collection stops walking; it still answers, absorbs and expires."""
    server, client = layer(), layer()
    requests = [make_request("REGISTER", port=5060 + i).to_bytes() for i in range(200)]
    for data in requests:
        server.receive(data, UAC, now=0.0)
    for event in drain(server):
        server.send_response(event.request.make_response(200, to_tag="r"), now=0.1)
    answers = [data for data, _ in server.messages_to_send()]
    keys = [client.send_request(make_request("OPTIONS"), PEER, now=0.0) for _ in range(200)]
    for data, _ in client.messages_to_send():
        request = parse_message(data)
        assert isinstance(request, Request)
        client.receive(request.make_response(200, to_tag="o").to_bytes(), PEER, now=0.1)
    assert len(only(drain(client), ResponseReceived)) == 200
    assert len(server) == 200 and len(client) == 200
    assert {client.transaction_state(key) for key in keys} == {State.COMPLETED}
    gc.collect()
    gc.collect()  # a timer's tuple holds the key's: one level is untracked a collection
    completed = len(gc.get_objects())  # what a full collection walks, 400 held
    # Completed still repeats its final response (§17.2.2) and absorbs a retransmitted
    # one (§17.1.2.2) ...
    server.receive(requests[7], UAC, now=1.0)
    assert server.messages_to_send() == [(answers[7], UAC)]
    for key in keys[:3]:
        again = make_request("OPTIONS", branch=key[1]).make_response(200, to_tag="o")
        client.receive(again.to_bytes(), PEER, now=1.0)
    assert drain(client) == [] and drain(server) == []
    # ... until Timer K (T4) and J (64·T1) end them.
    assert advance(client, 5.1) == [] and len(client) == 0
    assert advance(server, 32.1) == [] and len(server) == 0
    gc.collect()
    gc.collect()
    # Held, the 400 cost the collector next to nothing (~25 objects, where a transaction
    # object each was 400 more, and in a node each had an Address of its own too).
    assert completed - len(gc.get_objects()) < 100
    server.receive(requests[7], UAC, now=32.2)  # a new request again
    assert [type(e) for e in drain(server)] == [RequestReceived]


def test_server_stamps_received_and_rport() -> None:
    """§18.2.1 received, RFC 3581 §4 rport: the top Via tells where the request came from."""
    server = layer()
    request = make_request("REGISTER", host="10.0.0.7", port=5070)
    request.headers.set("Via", str(request.top_via.with_param("rport")))
    server.receive(request.to_bytes(), Address("udp", "203.0.113.9", 40123), now=0.0)
    (event,) = drain(server)
    via = event.request.top_via
    assert via.received == "203.0.113.9" and via.rport == 40123
    response = event.request.make_response(200, to_tag="x")
    assert response.top_via.rport == 40123  # the response goes back through the NAT binding


def test_send_response_without_a_transaction_is_a_local_error() -> None:
    """A response with no server transaction (Figures 7 and 8) is a TU bug, raised loudly."""
    server = layer()
    stray = make_request("OPTIONS").make_response(200)
    with pytest.raises(LocalProtocolError):
        server.send_response(stray, now=0.0)


# ================================================================== §17.2.3
def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    """§17.2.3 (Figures 7 and 8): the key is branch + sent-by + method."""
    server = layer()
    a = make_request("OPTIONS", branch="z9hG4bKsame", host="192.0.2.1")
    b = make_request("OPTIONS", branch="z9hG4bKsame", host="192.0.2.77")
    server.receive(a.to_bytes(), UAC, now=0.0)
    server.receive(b.to_bytes(), Address("udp", "192.0.2.77", 5060), now=0.0)
    keys = [e.transaction for e in only(drain(server), RequestReceived)]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert len(server) == 2
    c = make_request("OPTIONS", branch="z9hG4bKsame", host="192.0.2.1", port=5080)
    server.receive(c.to_bytes(), UAC, now=0.0)  # same host, other port: other sent-by too
    assert len(only(drain(server), RequestReceived)) == 1


def test_cancel_is_a_separate_transaction_from_its_invite() -> None:
    """§9.2 / §17.2.3 (Figures 7 and 8): CANCEL shares the INVITE's branch, not its transaction."""
    wire = Wire()
    invite = make_request("INVITE", branch="z9hG4bKcancelme")
    invite_key = wire.client.send_request(invite, wire.server_addr, now=0.0)
    wire.pump(0.0)
    (invite_event,) = only(drain(wire.server), RequestReceived)
    cancel = make_request("CANCEL", branch="z9hG4bKcancelme")
    cancel_key = wire.client.send_request(cancel, wire.server_addr, now=1.0)
    assert cancel_key != invite_key
    wire.pump(1.0)
    (cancel_event,) = only(drain(wire.server), RequestReceived)
    assert cancel_event.request.method == "CANCEL"
    assert cancel_event.transaction != invite_event.transaction
    assert len(wire.server) == 2
    wire.server.send_response(cancel_event.request.make_response(200, to_tag="c"), now=1.1)
    wire.server.send_response(invite_event.request.make_response(487, to_tag="c"), now=1.1)
    wire.pump(1.1)
    statuses = {e.transaction: e.response.status for e in only(drain(wire.client), ResponseReceived)
                if e.response.status >= 200}
    assert statuses == {cancel_key: 200, invite_key: 487}
    assert wire.client.transaction_state(invite_key) == State.COMPLETED


def test_response_matching_needs_branch_and_cseq_method() -> None:
    """§17.1.3 (Figure 5): a response with our branch but another CSeq method is not ours."""
    wire = Wire()
    key, event = server_request(wire, "INVITE")
    drain(wire.client)
    response = event.request.make_response(200, to_tag="x")
    response.headers.set("CSeq", f"{event.request.cseq.seq} CANCEL")
    wire.client.receive(response.to_bytes(), wire.server_addr, now=1.0)
    (stray,) = drain(wire.client)
    assert isinstance(stray, ResponseReceived) and stray.transaction is None
    assert wire.client.transaction_state(key) == State.PROCEEDING


def test_rfc2543_fallback_matching_without_magic_cookie() -> None:
    """§17.2.3 (Figure 7): no z9hG4bK -> match Request-URI, From tag, Call-ID, CSeq, Via."""
    server = layer()
    invite = make_request("INVITE", branch="old2543branch")
    data = invite.to_bytes()
    server.receive(data, UAC, now=0.0)
    (event,) = drain(server)
    (trying, _), = server.messages_to_send()
    server.receive(data, UAC, now=0.5)  # retransmission: matched, 100 repeated
    assert server.messages_to_send() == [(trying, UAC)] and drain(server) == []
    # An INVITE differing only in Call-ID is another transaction.
    other = make_request("INVITE", branch="old2543branch", call_id="other@192.0.2.1")
    server.receive(other.to_bytes(), UAC, now=0.6)
    assert len(only(drain(server), RequestReceived)) == 1
    server.messages_to_send()
    # The TU answers without naming the transaction; the ACK (with To tag) matches.
    server.send_response(event.request.make_response(486, to_tag="t2543"), now=1.0)
    assert len(server.messages_to_send()) == 1
    ack = make_request("ACK", branch="old2543branch")
    ack.headers.set("To", "<sip:bob@example.com>;tag=t2543")
    server.receive(ack.to_bytes(), UAC, now=1.1)
    assert drain(server) == []
    assert server.transaction_state(event.transaction) == State.CONFIRMED


# ========================================================== garbage and events
def test_unparseable_datagrams_never_raise() -> None:
    """Garbage is dropped; a request that can still be answered gets a stateless 400."""
    server = layer()
    for data in [b"", b"\r\n", b"\x00" * 10, b"SIP/2.0 200 OK\r\n\r\n", b"INVITE\r\n\r\n",
                 make_request("OPTIONS").to_bytes().replace(b"CSeq: 1 OPTIONS", b"CSeq: x")]:
        server.receive(data, UAC, now=0.0)
    events = drain(server)
    assert all(isinstance(e, MessageDropped) for e in events) and len(events) == 6
    assert [e.answered for e in events] == [False] * 5 + [True]
    (answer, _), = server.messages_to_send()
    assert parse_message(answer).status == 400  # type: ignore[union-attr]
    assert len(server) == 0


def test_bad_response_is_dropped() -> None:
    """§18.1.2: a response lacking To/From/Call-ID/CSeq is discarded, never answered."""
    client = layer()
    client.receive(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
                   b"Content-Length: 0\r\n\r\n", PEER, now=0.0)
    (event,) = drain(client)
    assert isinstance(event, MessageDropped) and not event.answered
    assert client.messages_to_send() == []


def test_transport_error_ends_the_transaction() -> None:
    """§17.1.4 (Figures 5 and 6, "Transport Err."): inform the TU, destroy the transaction."""
    client = layer()
    request = make_request("REGISTER")
    key = client.send_request(request, PEER, now=0.0)
    client.transport_error(key, "ICMP port unreachable")
    (event,) = drain(client)
    assert isinstance(event, TransportFailed)
    assert (event.transaction, event.request) == (key, request)
    assert event.reason == "ICMP port unreachable"
    assert len(client) == 0 and client.get_timer() is None
    client.transport_error(key, "again")  # unknown key: ignored
    assert drain(client) == []


def test_send_request_adds_a_cookie_branch_and_refuses_duplicates() -> None:
    """§8.1.1.7: branches start with z9hG4bK; Figures 5/6 start once per branch."""
    client = layer()
    request = make_request("OPTIONS", branch="nocookie")
    key = client.send_request(request, PEER, now=0.0)
    branch = request.top_via.branch
    assert branch is not None and branch.startswith("z9hG4bK") and len(branch) > 7
    assert key == ("c", branch, "OPTIONS")
    with pytest.raises(LocalProtocolError):
        client.send_request(request, PEER, now=0.0)
    mismatched = make_request("OPTIONS")
    mismatched.headers.set("CSeq", "1 INFO")
    with pytest.raises(LocalProtocolError):
        client.send_request(mismatched, PEER, now=0.0)


# ===================================================== lifecycle and purging
def test_register_exchange_leaves_nothing_behind() -> None:
    """Figures 6 and 8 end to end on UDP: once the timers run out both layers are empty."""
    wire = Wire()
    _key, event = server_request(wire, "REGISTER")
    wire.server.send_response(event.request.make_response(200, to_tag="r"), now=0.05)
    wire.pump(0.05)
    assert [type(e) for e in drain(wire.client)] == [ResponseReceived]
    assert (len(wire.client), len(wire.server)) == (1, 1)
    wire.run(until=100.0, start=0.05)
    assert (len(wire.client), len(wire.server)) == (0, 0)
    assert wire.client.get_timer() is None and wire.server.get_timer() is None
    assert drain(wire.client) == [] and drain(wire.server) == []


def test_thousand_transactions_are_purged_and_the_timer_heap_stays_bounded() -> None:
    """Figures 6 and 8, a thousand times over 500 s: Terminated means gone, heap included."""
    wire = Wire()
    biggest_heap = 0
    now = 0.0
    for n in range(1000):
        now = n * 0.5
        wire.run(until=now, start=now)
        _, event = server_request(wire, "REGISTER", now=now, cseq=n + 1, call_id=f"c{n}")
        wire.server.send_response(event.request.make_response(200, to_tag=f"t{n}"), now=now)
        wire.pump(now)
        assert len(only(drain(wire.client), ResponseReceived)) == 1
        biggest_heap = max(biggest_heap, len(wire.client._heap), len(wire.server._heap))
        # Only transactions younger than Timer J (32 s) may still exist.
        assert len(wire.server) <= 32 / 0.5 + 1
        assert len(wire.client) <= T4 / 0.5 + 1
    # Entries of disarmed timers (E, F) linger until their deadline, no longer: the heap
    # holds about two entries per transaction started in the last 64*T1 seconds.
    assert biggest_heap <= 2 * (32 / 0.5 + 1)
    wire.run(until=now + 100.0, start=now)
    assert (len(wire.client), len(wire.server)) == (0, 0)
    assert wire.client.get_timer() is None and wire.server.get_timer() is None
    assert wire.client._heap == [] and wire.server._heap == []


def test_loss_of_the_first_three_copies_is_recovered_by_retransmission() -> None:
    """Figures 6 and 8 under loss: copies at 0, 0.5 and 1.5 s are lost; the one at 3.5 s lands."""
    lost: list[bytes] = []

    def drop(data: bytes) -> bool:
        if data.startswith(b"REGISTER") and len(lost) < 3:
            lost.append(data)
            return True
        return False

    wire = Wire(drop=drop)
    key = wire.client.send_request(make_request("REGISTER"), wire.server_addr, now=0.0)
    wire.run(until=3.4)
    assert len(lost) == 3 and drain(wire.server) == []
    wire.run(until=3.5, start=3.4)
    (event,) = drain(wire.server)
    assert isinstance(event, RequestReceived)
    wire.server.send_response(event.request.make_response(200, to_tag="ok"), now=3.5)
    wire.pump(3.5)
    (response,) = drain(wire.client)
    assert isinstance(response, ResponseReceived) and response.transaction == key
    assert response.response.status == 200
    wire.run(until=100.0, start=3.5)
    assert (len(wire.client), len(wire.server)) == (0, 0)


def test_lost_final_response_is_recovered_from_completed_state() -> None:
    """Figure 8: the request retransmission makes the server repeat its final response."""
    dropped = []

    def drop(data: bytes) -> bool:
        if data.startswith(b"SIP/2.0 200") and not dropped:
            dropped.append(data)
            return True
        return False

    wire = Wire(drop=drop)
    key, event = server_request(wire, "MESSAGE")
    wire.server.send_response(event.request.make_response(200, to_tag="m"), now=0.1)
    wire.pump(0.1)
    assert dropped and drain(wire.client) == []
    wire.run(until=0.5, start=0.1)  # Timer E retransmits; the server answers again
    (response,) = drain(wire.client)
    assert isinstance(response, ResponseReceived) and response.transaction == key
    assert drain(wire.server) == []  # the TU saw the request once


def test_invite_loss_recovered_by_timer_a() -> None:
    """Figure 5 under loss: the INVITE copies at 0, 0.5 and 1.5 s are lost."""
    count = [0]

    def drop(data: bytes) -> bool:
        if data.startswith(b"INVITE"):
            count[0] += 1
            return count[0] <= 3
        return False

    wire = Wire(drop=drop)
    key = wire.client.send_request(make_request("INVITE"), wire.server_addr, now=0.0)
    wire.run(until=3.5)
    assert count[0] == 4
    assert [type(e) for e in drain(wire.server)] == [RequestReceived]
    assert wire.client.transaction_state(key) == State.PROCEEDING  # got the 100 Trying


def test_a_screened_request_is_answered_statelessly_and_leaves_no_transaction() -> None:
    """§8.2.7: the TU's look before a transaction (overload control's 503) answers a new
    non-INVITE request with none made; INVITE and what it lets through go on as before."""
    from emulator.sip.builder import stateless_tag

    server = layer()
    screened: list[str] = []

    def screen(request: Request) -> Response | None:
        screened.append(request.method)
        if request.method == "OPTIONS":
            return None
        return request.make_response(503, to_tag=stateless_tag(request))

    server.before_transaction = screen
    register = make_request("REGISTER", branch="z9hG4bK-one")
    for now in (0.0, 0.5):  # the request, then its retransmission: the same answer
        server.receive(register.to_bytes(), UAC, now=now)
        assert drain(server) == []
        ((data, destination),) = server.messages_to_send()
        answer = parse_message(data)
        assert isinstance(answer, Response) and destination == UAC
        assert (answer.status, answer.to.tag) == (503, stateless_tag(register))
        assert len(server) == 0
    other = make_request("REGISTER", branch="z9hG4bK-two")
    assert stateless_tag(other) != stateless_tag(register)
    server.receive(make_request("OPTIONS").to_bytes(), UAC, now=1.0)
    server.receive(make_request("INVITE").to_bytes(), UAC, now=1.0)
    assert [type(e) for e in drain(server)] == [RequestReceived, RequestReceived]
    assert len(server) == 2 and screened == ["REGISTER", "REGISTER", "OPTIONS"]
