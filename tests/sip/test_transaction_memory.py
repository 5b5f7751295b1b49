"""What a completed transaction keeps: enough to absorb a retransmission, nothing more.

A non-INVITE server transaction lives on in Completed for Timer J (64·T1 = 32 s on UDP,
§17.2.2); at hundreds of REGISTERs per second, keeping the parsed request there is what
made memory grow with load (issue 11).
"""

from __future__ import annotations

import tracemalloc

from emulator.sip import Address
from emulator.sip import Headers
from emulator.sip import Request
from emulator.sip import RequestReceived
from emulator.sip import TransactionLayer
from emulator.sip import new_branch
from emulator.sip.headers import clear_parse_memos

PEER = Address("udp", "192.0.2.2", 5060)
TOKEN_BODY = b"x" * 2048  # a REGISTER's info bodies, tokens inside, are about this big


def register(index: int) -> bytes:
    headers = Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.2:5060;branch={new_branch()}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:user{index}@example.com>;tag=t{index}"),
        ("To", f"<sip:user{index}@example.com>"),
        ("Call-ID", f"reg-{index}@192.0.2.2"),
        ("CSeq", "1 REGISTER"),
        ("Contact", f"<sip:u{index}@192.0.2.2:5060>"),
        ("Content-Type", "application/vnd.3gpp.mcptt-info+xml"),
    ])
    request = Request("REGISTER", "sip:example.com", headers)
    request.set_body(TOKEN_BODY)
    return request.to_bytes()


def test_completed_server_transactions_keep_only_the_last_response() -> None:
    layer = TransactionLayer(name="registrar")
    count = 2000
    requests = [register(i) for i in range(count)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in requests:
            layer.receive(data, PEER, now=0.0)
            event = layer.next_event()
            assert isinstance(event, RequestReceived)
            layer.send_response(event.request.make_response(200, to_tag="r"), now=0.0,
                                transaction=event.transaction)
            del event
        sent = layer.messages_to_send()
        clear_parse_memos()  # bounded LRUs of parsed URIs and headers, not per transaction
        retained = tracemalloc.get_traced_memory()[0] - before - sum(len(d) for d, _ in sent)
    finally:
        tracemalloc.stop()
    assert len(layer) == count  # all in Completed, waiting for Timer J
    per_transaction = retained / count
    # The parsed REGISTER alone holds its 2 kB body plus its header strings; a completed
    # transaction keeps its key, its timers and the 200's bytes (counted above, once).
    assert per_transaction < len(TOKEN_BODY), f"{per_transaction:.0f} bytes each"
    # And it still absorbs a retransmission with the same 200 (§17.2.2).
    layer.receive(requests[7], PEER, now=1.0)
    assert layer.next_event() is None
    ((again, to), ) = layer.messages_to_send()
    assert to == PEER and again == sent[7][0]
    layer.handle_timer(now=32.0)  # Timer J: then nothing is left
    assert len(layer) == 0
