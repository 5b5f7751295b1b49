"""Property tests: hostile bytes never crash the SIP core.

* the parser and the §8.2 checks raise nothing but :class:`RemoteProtocolError`;
* the stream framer, fed in any chunking, raises nothing but :class:`RemoteProtocolError`;
* :meth:`TransactionLayer.receive` never raises at all.

Budget per run: 6,000 random + 6,000 mutated inputs for the parser, 10,000
for the framer, 3,000 for the transaction layer.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from emulator.sip import Address
from emulator.sip import KeepAlive
from emulator.sip import RemoteProtocolError
from emulator.sip import Request
from emulator.sip import State
from emulator.sip import StreamFramer
from emulator.sip import TimerConfig
from emulator.sip import TransactionLayer
from emulator.sip import check_request
from emulator.sip import check_response
from emulator.sip import parse_message

from .support import CANONICAL
from .support import REGISTER
from .support import fixture
from .support import make_request

FUZZ = settings(deadline=None, derandomize=False, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEEDS = [REGISTER, *CANONICAL.values(), fixture("wsinv.dat"), fixture("mpart01.dat"),
         fixture("esc01.dat"), fixture("unreason.dat"), fixture("inv2543.dat")]

# Octets and snippets that sit on the grammar's seams.
INTERESTING = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">",
               b'"', b"\\", b"%", b"@", b"=", b"?", b"/", b"[", b"]", b"\x00", b"\xff", b"\xc2\xb2",
               b"\xe2\x80", b"0", b"9" * 12, b"-1", b"z9hG4bK", b"SIP/2.0", b"Content-Length: ",
               b"l:", b"Via: SIP/2.0/UDP ", b";rport", b";tag=", b"sip:", b"*"]


def mutate(data: bytes, rng: random.Random, count: int) -> bytes:
    """Apply ``count`` random insertions, deletions and replacements to ``data``."""
    out = bytearray(data)
    for _ in range(count):
        pos = rng.randint(0, len(out))
        op = rng.random()
        chunk = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 4))
        if op < 0.4:
            out[pos:pos] = chunk
        elif op < 0.7:
            del out[pos:pos + rng.randint(1, 8)]
        else:
            out[pos:pos + len(chunk)] = chunk
    return bytes(out)


@st.composite
def mutations(draw: st.DrawFn, seeds: list[bytes] = SEEDS) -> bytes:
    """A valid message with random insertions, deletions and replacements.

    The edits are drawn one by one, so Hypothesis shrinks a failure to the
    fewest edits that still break the code.
    """
    data = bytearray(draw(st.sampled_from(seeds)))
    piece = st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=4))
    ops = draw(st.lists(st.tuples(st.sampled_from("idr"), st.integers(0, 2**16), piece,
                                  st.integers(1, 8)), min_size=1, max_size=8))
    for op, where, chunk, width in ops:
        pos = where % (len(data) + 1)
        if op == "i":
            data[pos:pos] = chunk
        elif op == "d":
            del data[pos:pos + width]
        else:
            data[pos:pos + len(chunk)] = chunk
    return bytes(data)


@st.composite
def cheap_mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """Like :func:`mutations` with the edits taken from one drawn seed: far fewer draws,
    so ten thousand examples fit in the time budget (failures still replay exactly)."""
    data = draw(st.sampled_from(seeds))
    count, seed = draw(st.integers(0, 8)), draw(st.integers(0, 2**32 - 1))
    return mutate(data, random.Random(seed), count)


def _parse_and_check(data: bytes, *, stream: bool = False) -> None:
    try:
        message = parse_message(data, stream=stream)
    except RemoteProtocolError as exc:
        assert exc.status in (None, 400, 505, 513)
        return
    try:
        if isinstance(message, Request):
            check_request(message)
        else:
            check_response(message)
    except RemoteProtocolError as exc:
        assert exc.status in (None, 400)
        return
    # Whatever passed the checks serialises and parses back to the same message
    # (to_bytes adds the Content-Length a datagram may lack, §18.3).
    again = parse_message(message.to_bytes(), stream=True)
    expected = list(message.headers)
    if "Content-Length" not in message.headers:
        expected.append(("Content-Length", str(len(message.body))))
    assert list(again.headers) == expected
    assert again.body == message.body


@settings(FUZZ, max_examples=6000)
@given(st.binary(max_size=1500))
def test_parser_on_random_bytes(data: bytes) -> None:
    """Arbitrary octets: only RemoteProtocolError, with an answerable status or None."""
    _parse_and_check(data)


@settings(FUZZ, max_examples=3000)
@given(mutations())
def test_parser_on_mutated_messages(data: bytes) -> None:
    """Near-valid messages reach deep into the header grammar, as datagram and as stream."""
    _parse_and_check(data)
    _parse_and_check(data, stream=True)


@st.composite
def chunked_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    pieces = draw(st.lists(st.one_of(cheap_mutations(SEEDS),
                                     st.sampled_from([b"\r\n", b"\r\n\r\n"]),
                                     st.binary(max_size=64)), min_size=1, max_size=4))
    stream = b"".join(pieces)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    cuts = sorted(rng.randint(0, len(stream)) for _ in range(draw(st.integers(0, 12))))
    return stream, cuts


@settings(FUZZ, max_examples=4000)
@given(chunked_streams())
def test_framer_with_arbitrary_chunking(case: tuple[bytes, list[int]]) -> None:
    """Any split of any stream: frames or a fatal RemoteProtocolError, nothing else."""
    stream, cuts = case
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    previous = 0
    try:
        for cut in [*cuts, len(stream)]:
            out.extend(framer.feed(stream[previous:cut]))
            previous = cut
    except RemoteProtocolError as exc:
        assert exc.fatal
        return
    # Nothing is invented or lost: frames plus what is buffered account for every octet
    # except the CRLFs consumed as keep-alives and separators.
    framed = b"".join(m for m in out if isinstance(m, bytes))
    assert len(framed) + framer.buffered <= len(stream)
    assert stream.replace(b"\r\n", b"").startswith(framed.replace(b"\r\n", b""))


def _layer_with_pending_client_transactions() -> tuple[TransactionLayer, list[bytes]]:
    """A layer with INVITEs and a MESSAGE outstanding, and responses that match them.

    Branches are fixed, so the answers built here match every fresh layer.
    """
    layer = TransactionLayer(timers=TimerConfig())
    peer = Address("udp", "192.0.2.2", 5060)
    answers = []
    for method, status in (("INVITE", 486), ("MESSAGE", 200), ("INVITE", 200)):
        request = make_request(method, branch=f"z9hG4bKfz-{method}-{status}",
                               call_id=f"{method}-{status}")
        layer.send_request(request, peer, now=0.0)
        answers.append(request.make_response(status, to_tag="fz").to_bytes())
        answers.append(request.make_response(180, to_tag="fz").to_bytes())
    layer.messages_to_send()
    return layer, answers


_, _ANSWERS = _layer_with_pending_client_transactions()
LAYER_SEEDS = [*SEEDS, *_ANSWERS, make_request("ACK", branch="z9hG4bKfz-ack").to_bytes()]


@settings(FUZZ, max_examples=3000)
@given(st.lists(st.one_of(cheap_mutations(LAYER_SEEDS), st.sampled_from(LAYER_SEEDS),
                          st.binary(max_size=200)), min_size=1, max_size=5),
       st.sampled_from(["udp", "tcp"]))
def test_transaction_layer_receive_never_raises(datagrams: list[bytes], transport: str) -> None:
    """receive() absorbs everything: garbage becomes MessageDropped or a stateless answer."""
    layer, _ = _layer_with_pending_client_transactions()
    source = Address(transport, "192.0.2.2", 5060)
    now = 0.0
    for data in datagrams:
        layer.receive(data, source, now=now, stream=transport == "tcp")
        layer.handle_timer(now=now)
        for wire, destination in layer.messages_to_send():
            assert destination == source or destination.host == "192.0.2.2"
            assert isinstance(wire, bytes)
        while layer.next_event() is not None:
            pass
        now += 0.7
    # Once every timer has run out, only transactions waiting on a TU or a peer that
    # never answered may be left (Proceeding/Trying have no timer of their own).
    layer.handle_timer(now=1000.0)
    layer.messages_to_send()
    states = {layer.transaction_state(key) for key in list(layer._transactions)}
    assert states <= {State.PROCEEDING, State.TRYING}
