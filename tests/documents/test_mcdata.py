"""The binary SDS parts of an MCData SIP MESSAGE (24.282 §9.2.2, clause 15).

Round trips, the octets a deployed client writes, and hostile input: a
decoder raises :class:`McdataError` on anything truncated, oversize or
unknown, and no other exception, whatever the bytes (property tests).
"""

from __future__ import annotations

import random
import struct
import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from emulator.documents import mcdata
from emulator.documents.mcdata import DataPayload
from emulator.documents.mcdata import McdataError
from emulator.documents.mcdata import SdsSignalling

CONVERSATION = uuid.UUID("8c4b1f1e-6a55-4b8e-9f37-3d1c9f3a0c21")
MESSAGE = uuid.UUID("0f2d6a1b-1111-4c2e-8a7d-55e2a1c9b001")
REPLIED = uuid.UUID("0f2d6a1b-1111-4c2e-8a7d-55e2a1c9b000")
SENT = 1790744400  # 2026-09-30T05:00:00Z

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Building structured values costs more than drawing bytes; fewer keep the run short.
ROUND_TRIP = settings(FUZZ, max_examples=120)


def signalling(**changes: object) -> SdsSignalling:
    values: dict[str, object] = {"date_time": SENT, "conversation_id": CONVERSATION,
                                 "message_id": MESSAGE, "in_reply_to": None,
                                 "disposition": None}
    values.update(changes)
    return SdsSignalling(**values)  # type: ignore[arg-type]


def test_mime_types() -> None:
    assert mcdata.SIGNALLING_MIME_TYPE == "application/vnd.3gpp.mcdata-signalling"
    assert mcdata.PAYLOAD_MIME_TYPE == "application/vnd.3gpp.mcdata-payload"


@pytest.mark.parametrize("message", [
    signalling(),
    signalling(in_reply_to=REPLIED),
    signalling(disposition=mcdata.DISPOSITION_DELIVERY_AND_READ),
    signalling(in_reply_to=REPLIED, disposition=mcdata.DISPOSITION_READ, date_time=0),
    signalling(date_time=(1 << 40) - 1),
], ids=["bare", "reply", "disposition", "both", "latest"])
def test_signalling_round_trip(message: SdsSignalling) -> None:
    assert SdsSignalling.decode(message.encode()) == message


def test_signalling_octets_as_a_deployed_client_writes_them() -> None:
    """Type 1, 5-octet big-endian seconds, the two UUIDs, then disposition DELIVERY (0x81)."""
    expected = (bytes([0x01]) + b"\x00" + struct.pack(">I", SENT) + CONVERSATION.bytes
                + MESSAGE.bytes + bytes([0x81]))
    message = signalling(disposition=mcdata.DISPOSITION_DELIVERY)
    assert message.encode() == expected
    assert SdsSignalling.decode(expected) == message


def test_signalling_ies_in_any_order_and_application_ids_passed_over() -> None:
    fixed = signalling().encode()
    extended = bytes([mcdata.IEI_EXTENDED_APPLICATION_ID, 0, 3]) + b"app"
    data = (fixed + bytes([0x82, mcdata.IEI_APPLICATION_ID, 7]) + extended
            + bytes([mcdata.IEI_IN_REPLY_TO]) + REPLIED.bytes)
    assert SdsSignalling.decode(data) == signalling(in_reply_to=REPLIED,
                                                    disposition=mcdata.DISPOSITION_READ)


def test_text_payload_octets_and_round_trip() -> None:
    text = "Evacuate sector 7 — now"
    encoded = text.encode()
    payload = mcdata.text_payload(text)
    data = payload.encode()
    assert data == (bytes([0x03, 0x01, 0x78]) + struct.pack(">H", 1 + len(encoded))
                    + bytes([0x01]) + encoded)
    decoded = DataPayload.decode(data)
    assert decoded == payload and decoded.text() == text


def test_several_payloads_round_trip() -> None:
    payload = DataPayload(((mcdata.CONTENT_BINARY, bytes(range(256))),
                           (mcdata.CONTENT_TEXT, b"first"),
                           (mcdata.CONTENT_TEXT, b"second"),
                           (mcdata.CONTENT_LOCATION, b""),
                           (mcdata.CONTENT_HYPERLINKS, b"https://example.org/")))
    decoded = DataPayload.decode(payload.encode())
    assert decoded == payload and decoded.text() == "first"


def test_text_of_a_payload_without_text() -> None:
    with pytest.raises(McdataError, match="no TEXT payload"):
        DataPayload(((mcdata.CONTENT_BINARY, b"\x00"),)).text()
    with pytest.raises(McdataError, match="TEXT payload is not UTF-8"):
        DataPayload(((mcdata.CONTENT_TEXT, b"\xff\xfe"),)).text()


GOOD_SIGNALLING = signalling(in_reply_to=REPLIED, disposition=1).encode()
GOOD_PAYLOAD = DataPayload(((1, b"hi"), (2, b"\x00\x01"))).encode()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "SDS SIGNALLING PAYLOAD is empty"),
    (GOOD_SIGNALLING[:37], "truncated: 37 octets, at least 38 needed"),
    (GOOD_SIGNALLING[:40], "InReplyTo message ID at offset 38 truncated"),
    (b"\x03" + GOOD_SIGNALLING[1:], r"message type 0x03 is not SDS SIGNALLING PAYLOAD \(0x01\)"),
    (b"\x41" + GOOD_SIGNALLING[1:], "security-protected SDS SIGNALLING PAYLOAD"),
    (GOOD_SIGNALLING + b"\x5e", "unknown information element 0x5e at offset 56"),
    (GOOD_SIGNALLING + b"\x82", r"information element 0x8 repeated"),
    (signalling().encode() + b"\x80", "unknown SDS disposition request type 0"),
    (signalling().encode() + b"\x84", "unknown SDS disposition request type 4"),
    (signalling().encode() + bytes([0x7D, 0, 9, 1]), "Extended application ID at offset 38"),
    (GOOD_SIGNALLING + b"\x00" * mcdata.MAX_BYTES, "exceeds 65536"),
])
def test_bad_signalling_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(McdataError, match=message):
        SdsSignalling.decode(data)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "DATA PAYLOAD is empty"),
    (b"\x03", "no number of payloads"),
    (b"\x03\x00", "announces no payloads"),
    (b"\x03\x01", "0 Payload IEs, 1 announced"),
    (GOOD_PAYLOAD[:-1], "Payload at offset 8 truncated"),
    (GOOD_PAYLOAD[:4], "Payload at offset 2 truncated"),
    (b"\x01" + GOOD_PAYLOAD[1:], r"message type 0x01 is not DATA PAYLOAD \(0x03\)"),
    (b"\xc3" + GOOD_PAYLOAD[1:], "security-protected DATA PAYLOAD"),
    (bytes([3, 1, 0x78, 0, 0]), "lacks its content type"),
    (bytes([3, 1, 0x78, 0, 1, 9]), "unknown payload content type 9 at offset 5"),
    (bytes([3, 1, 0x7A, 0, 1, 1]), r"security-protected payloads \(33.180\)"),
    (bytes([3, 1, 0x79, 0, 1, 1]), "unknown information element 0x79 at offset 2"),
    (bytes([3, 1, 0x78, 0, 1, 1, 0x78, 0, 1, 1]), "more Payload IEs than the 1 announced"),
    (bytes([3, 3, 0x78, 0, 1, 1]), "1 Payload IEs, 3 announced"),
    (GOOD_PAYLOAD + b"\x00" * mcdata.MAX_BYTES, "exceeds 65536"),
])
def test_bad_payload_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(McdataError, match=message):
        DataPayload.decode(data)


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(McdataError, match="does not fit 5 octets"):
        signalling(date_time=1 << 40).encode()
    with pytest.raises(McdataError, match="does not fit 5 octets"):
        signalling(date_time=-1).encode()
    with pytest.raises(McdataError, match="unknown SDS disposition request type 0"):
        signalling(disposition=0).encode()
    with pytest.raises(McdataError, match="0 payloads"):
        DataPayload(()).encode()
    with pytest.raises(McdataError, match="256 payloads"):
        DataPayload(((1, b""),) * 256).encode()
    with pytest.raises(McdataError, match="unknown payload content type 7"):
        DataPayload(((7, b""),)).encode()
    with pytest.raises(McdataError, match="does not fit a TLV-E"):
        DataPayload(((2, b"\x00" * 0xFFFF),)).encode()
    with pytest.raises(McdataError, match="exceeds 65536"):
        DataPayload(((2, b"\x00" * 40000), (2, b"\x00" * 40000))).encode()
    # Exactly the size bound: two header octets and one IE of three plus a content type.
    largest = DataPayload(((2, b"\x00" * (mcdata.MAX_BYTES - 6)),))
    assert len(largest.encode()) == mcdata.MAX_BYTES
    assert DataPayload.decode(largest.encode()) == largest


def test_mcdata_error_is_a_value_error() -> None:
    assert issubclass(McdataError, ValueError)


# Property tests: whatever the octets, only McdataError escapes.

def _decode_all(data: bytes) -> None:
    for decode in (SdsSignalling.decode, DataPayload.decode):
        try:
            decode(data)
        except McdataError:
            pass


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_mcdata_error(data: bytes) -> None:
    _decode_all(data)


@FUZZ
@given(st.sampled_from([0x01, 0x03, 0x41, 0xC3]), st.binary(max_size=120))
def test_random_bodies_behind_a_valid_type_raise_only_mcdata_error(kind: int,
                                                                    rest: bytes) -> None:
    _decode_all(bytes([kind]) + rest)


SEEDS = [GOOD_SIGNALLING, GOOD_PAYLOAD, signalling().encode(),
         mcdata.text_payload("hello").encode()]


def test_mutated_valid_messages_raise_only_mcdata_error() -> None:
    rng = random.Random(24282)
    for _ in range(3000):
        data = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data) + 1)
            operation = rng.random()
            if operation < 0.4 and position < len(data):
                data[position] = rng.randrange(256)
            elif operation < 0.7:
                data[position:position] = rng.randbytes(rng.randint(1, 3))
            else:
                del data[position:position + rng.randint(1, 20)]
        _decode_all(bytes(data))


@ROUND_TRIP
@given(st.builds(SdsSignalling,
                 st.integers(0, (1 << 40) - 1), st.uuids(), st.uuids(),
                 st.none() | st.uuids(), st.none() | st.sampled_from(sorted(mcdata.DISPOSITIONS))))
def test_any_signalling_round_trips(message: SdsSignalling) -> None:
    assert SdsSignalling.decode(message.encode()) == message


@ROUND_TRIP
@given(st.lists(st.tuples(st.sampled_from(sorted(mcdata.CONTENT_TYPES)),
                          st.binary(max_size=64)), min_size=1, max_size=20))
def test_any_payload_round_trips(contents: list[tuple[int, bytes]]) -> None:
    payload = DataPayload(tuple(contents))
    assert DataPayload.decode(payload.encode()) == payload


@ROUND_TRIP
@given(st.text(max_size=300))
def test_any_text_round_trips(text: str) -> None:
    try:
        encoded = mcdata.text_payload(text).encode()
    except UnicodeEncodeError:
        return  # lone surrogates have no UTF-8 form
    assert DataPayload.decode(encoded).text() == text
