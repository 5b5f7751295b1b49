"""Property tests: hostile bytes never crash the SIP core.

* the parser and the §8.2 checks raise nothing but :class:`RemoteProtocolError`;
* every typed header view raises nothing but :class:`RemoteProtocolError` or ValueError,
  and what it parses prints back to the same value;
* the stream framer, fed in any chunking, raises nothing but a fatal
  :class:`RemoteProtocolError`, and any split of a stream frames exactly as the whole;
* :meth:`TransactionLayer.receive` never raises at all.

Inputs per run: at least 10,000 for each test (Hypothesis draws 1,000 examples and each
checks a batch of :data:`BATCH` inputs made from its drawn seed, so a failure replays
exactly).  Mutations and generated text use valid UTF-8, which reaches the header grammar;
raw bytes (invalid UTF-8 included) have tests of their own.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from emulator.sip import Address
from emulator.sip import Headers
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
from emulator.sip.headers import Contact
from emulator.sip.headers import ContentType
from emulator.sip.headers import CSeq
from emulator.sip.headers import NameAddress
from emulator.sip.headers import Via
from emulator.sip.headers import parse_name_addresses
from tests.support.mutation import random_text
from tests.support.mutation import utf8_mutate

from .support import CANONICAL
from .support import REGISTER
from .support import fixture
from .support import make_request

FUZZ = settings(deadline=None, derandomize=False, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True

SEEDS = [REGISTER, *CANONICAL.values(), fixture("wsinv.dat"), fixture("mpart01.dat"),
         fixture("esc01.dat"), fixture("unreason.dat"), fixture("inv2543.dat")]

# Octets and snippets that sit on the grammar's seams.
INTERESTING = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">",
               b'"', b"\\", b"%", b"@", b"=", b"?", b"/", b"[", b"]", b"\x00", b"\xff", b"\xc2\xb2",
               b"\xe2\x80", b"0", b"9" * 12, b"-1", b"z9hG4bK", b"SIP/2.0", b"Content-Length: ",
               b"l:", b"Via: SIP/2.0/UDP ", b";rport", b";tag=", b"sip:", b"*"]


BATCH = 10
"""Inputs checked per Hypothesis example."""
EXAMPLES = settings(FUZZ, max_examples=1000)

TEXT_SEEDS = [seed.decode() for seed in SEEDS if _is_utf8(seed)]


def mutate(data: bytes, rng: random.Random, count: int) -> bytes:
    """Raw-byte edits (invalid UTF-8 included): ``count`` random insertions, deletions
    and replacements of ``data``."""
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


SEED = st.integers(0, 2**64 - 1)
START_LINES = ["REGISTER sip:example.com SIP/2.0", "INVITE sip:bob@example.com SIP/2.0",
               "MESSAGE sip:x@[::1]:5060;transport=tcp SIP/2.0", "SIP/2.0 200 OK",
               "SIP/2.0 183 Session Progress", "OPTIONS * SIP/2.0"]
HEADER_NAMES = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m",
                "Route", "Record-Route", "Path", "Service-Route", "P-Asserted-Identity",
                "P-Preferred-Identity", "Max-Forwards", "Expires", "Content-Type", "c",
                "Content-Length", "l", "Event", "o", "Warning", "Retry-After", "X-Odd"]


def sip_shaped(rng: random.Random) -> bytes:
    """A start line and headers whose names are real and whose values are random text."""
    lines = [rng.choice(START_LINES)]
    for _ in range(rng.randint(0, 12)):
        value = "".join(random_text(rng, 12) for _ in range(rng.randint(0, 4)))
        lines.append(f"{rng.choice(HEADER_NAMES)}:{rng.choice(['', ' ', '  '])}{value}")
    body = random_text(rng) if rng.random() < 0.3 else ""
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@EXAMPLES
@given(SEED)
def test_parser_on_sip_shaped_text(seed: int) -> None:
    """Valid UTF-8, real header names, random values: the header grammar's edges."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        data = sip_shaped(rng)
        _parse_and_check(data)
        _parse_and_check(data, stream=True)


@EXAMPLES
@given(SEED)
def test_parser_on_raw_bytes(seed: int) -> None:
    """Arbitrary octets: only RemoteProtocolError, with an answerable status or None."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        _parse_and_check(rng.randbytes(rng.randint(0, 1500)))


@EXAMPLES
@given(SEED)
def test_parser_on_utf8_mutations(seed: int) -> None:
    """Near-valid messages, still valid UTF-8, reach deep into the header grammar, as
    datagram and as stream."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        data = utf8_mutate(rng.choice(TEXT_SEEDS), rng, rng.randint(1, 8))
        _parse_and_check(data)
        _parse_and_check(data, stream=True)


@EXAMPLES
@given(SEED)
def test_parser_on_raw_byte_mutations(seed: int) -> None:
    """The same with raw-byte edits (invalid UTF-8 included)."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        _parse_and_check(mutate(rng.choice(SEEDS), rng, rng.randint(1, 8)))


@settings(FUZZ, max_examples=300)
@given(mutations())
def test_parser_on_shrinkable_mutations(data: bytes) -> None:
    """Edits drawn one by one, so a failure shrinks to the fewest edits that break it."""
    _parse_and_check(data)
    _parse_and_check(data, stream=True)


# Every typed view of a header: how a message is asked for it.
TYPED_VIEWS: dict[str, tuple[Any, str]] = {
    # header: (how a message is asked for it, a valid value the mutations start from)
    "Via": (lambda m: m.vias, "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKx;rport;received=::1"),
    "From": (lambda m: m.from_, '"Alice" <sip:alice@example.com>;tag=1928301774'),
    "To": (lambda m: m.to, "<sip:bob@example.com;user=phone>"),
    "CSeq": (lambda m: m.cseq, "4711 MESSAGE"),
    "Contact": (lambda m: m.contacts,
                '<sip:a@192.0.2.1:5060;transport=tcp>;expires=60;q=0.5;+sip.instance="<x>"'),
    "Route": (lambda m: m.routes, "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
    "Record-Route": (lambda m: m.record_routes, "<sip:p1.example.com;lr;ftag=1>"),
    "Path": (lambda m: m.paths, "<sip:term@pcscf.example.com;lr>"),
    "Service-Route": (lambda m: m.service_routes, "<sip:orig@scscf.example.com;lr>"),
    "Content-Type": (lambda m: m.content_type, 'multipart/mixed;boundary="b1"'),
    "Max-Forwards": (lambda m: m.max_forwards, "70"),
    "Expires": (lambda m: m.expires, "3600"),
    "Event": (lambda m: m.event_package, "reg;id=1"),
    "P-Asserted-Identity": (lambda m: parse_name_addresses(m.headers.values(
        "P-Asserted-Identity")), '"Alice" <sip:alice@example.com>, <tel:+15551234>'),
}


def _typed_request(name: str, value: str) -> Request:
    headers = [(n, v) for n, v in make_request("MESSAGE").headers if n != name]
    return Request("MESSAGE", "sip:bob@example.com", Headers([*headers, (name, value)]))


def test_every_typed_header_view_reads_its_unmutated_value() -> None:
    """Control: each seed value parses, so the mutations start from a valid one."""
    for name, (view, good) in TYPED_VIEWS.items():
        assert view(_typed_request(name, good)) not in (None, [], ""), name


@EXAMPLES
@given(SEED)
def test_every_typed_header_view_on_fuzzed_values(seed: int) -> None:
    """A hostile value behind any typed view: only RemoteProtocolError or ValueError; a
    value it accepts prints back to one it parses the same."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        name = rng.choice(list(TYPED_VIEWS))
        view, good = TYPED_VIEWS[name]
        value = utf8_mutate(good, rng, rng.randint(0, 6)).decode().replace("\r", "")
        value = value.replace("\n", "").strip()
        if not value:
            continue
        try:
            request = _typed_request(name, value)
            parsed = view(request)
        except (RemoteProtocolError, ValueError):
            continue
        if isinstance(parsed, Via | NameAddress | Contact | CSeq | ContentType):
            again = view(_typed_request(name, str(parsed)))
            assert str(again) == str(parsed)
        elif isinstance(parsed, list) and parsed and not isinstance(parsed[0], str):
            printed = ", ".join(str(item) for item in parsed)
            assert [str(x) for x in view(_typed_request(name, printed))] == \
                [str(x) for x in parsed]


def stream_of(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.55:
            pieces.append(utf8_mutate(rng.choice(TEXT_SEEDS), rng, rng.randint(0, 6)))
        elif kind < 0.75:
            pieces.append(rng.choice(SEEDS))
        elif kind < 0.9:
            pieces.append(rng.choice([b"\r\n", b"\r\n\r\n", b"\r"]))
        else:
            pieces.append(rng.randbytes(rng.randint(0, 64)))
    return b"".join(pieces)


def frame(stream: bytes, cuts: list[int]) -> tuple[list[bytes | KeepAlive], int, bool]:
    """What a framer makes of ``stream`` fed in pieces cut at ``cuts``: frames, the bytes
    it still holds, and whether it gave up (a fatal error)."""
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    previous = 0
    try:
        for cut in [*cuts, len(stream)]:
            out.extend(framer.feed(stream[previous:cut]))
            previous = cut
    except RemoteProtocolError as exc:
        assert exc.fatal
        return out, framer.buffered, True
    return out, framer.buffered, framer.error is not None


@EXAMPLES
@given(SEED)
def test_framer_gives_the_same_frames_however_the_stream_is_cut(seed: int) -> None:
    """Chunking invariance: any split of a byte stream frames exactly as the whole does
    (same messages, same keep-alives, same remainder, same verdict), and frames plus
    remainder account for every octet but the CRLFs between messages."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        stream = stream_of(rng)
        whole = frame(stream, [])
        cuts = sorted(rng.randint(0, len(stream)) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.2:  # byte by byte
            cuts = list(range(len(stream)))
        pieces = frame(stream, cuts)
        if whole[2] or pieces[2]:
            # A fatal error ends the stream the same way, after the same frames.
            assert whole[2] and pieces[2], (stream, cuts)
            assert pieces[0] == whole[0], (stream, cuts)
            continue
        assert pieces == whole, (stream, cuts)
        framed = b"".join(m for m in whole[0] if isinstance(m, bytes))
        assert len(framed) + whole[1] <= len(stream)
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


LAYER_TEXT_SEEDS = [seed.decode() for seed in LAYER_SEEDS if _is_utf8(seed)]


def layer_input(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.45:
        return utf8_mutate(rng.choice(LAYER_TEXT_SEEDS), rng, rng.randint(0, 8))
    if kind < 0.65:
        return mutate(rng.choice(LAYER_SEEDS), rng, rng.randint(1, 8))
    if kind < 0.85:
        return rng.choice(LAYER_SEEDS)
    return rng.randbytes(rng.randint(0, 200))


@EXAMPLES
@given(SEED, st.sampled_from(["udp", "tcp"]))
def test_transaction_layer_receive_never_raises(seed: int, transport: str) -> None:
    """receive() absorbs everything: garbage becomes MessageDropped or a stateless answer.
    Each example feeds one layer (with transactions of its own outstanding) a batch of
    inputs, matching answers among them, with time passing between them."""
    rng = random.Random(seed)
    layer, _ = _layer_with_pending_client_transactions()
    source = Address(transport, "192.0.2.2", 5060)
    now = 0.0
    for _ in range(BATCH):
        layer.receive(layer_input(rng), source, now=now, stream=transport == "tcp")
        layer.handle_timer(now=now)
        for wire, destination in layer.messages_to_send():
            assert destination == source or destination.host == "192.0.2.2"
            assert isinstance(wire, bytes)
        while layer.next_event() is not None:
            pass
        now += rng.choice([0.0, 0.1, 0.7, 5.0])
    # Once every timer has run out, only transactions waiting on a TU or a peer that
    # never answered may be left (Proceeding/Trying have no timer of their own).
    layer.handle_timer(now=1000.0)
    layer.messages_to_send()
    states = {layer.transaction_state(key) for key in list(layer._transactions)}
    assert states <= {State.PROCEEDING, State.TRYING}
