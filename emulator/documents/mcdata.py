"""The binary MCData parts of a short data service message (24.282 §9.2.2, clause 15).

A standalone SDS over the signalling control plane is a SIP MESSAGE whose
``multipart/mixed`` body holds, next to the ``mcdata-info`` XML, two binary
parts (24.282 §9.2.2; types in the IANA media-type registry [S]):

* ``application/vnd.3gpp.mcdata-signalling``: the SDS SIGNALLING PAYLOAD
  message (§15.1.2): message type, date and time (5 octets), conversation ID
  and message ID (16-octet UUIDs), then optional information elements:
  InReplyTo message ID, SDS disposition request type.
* ``application/vnd.3gpp.mcdata-payload``: the DATA PAYLOAD message
  (§15.1.4): message type, number of payloads, then that many Payload IEs,
  each a content type octet and the data.

Octet values [S], from two implementations that agree where both speak (a
Wireshark dissector by Nemergent and a production client/server codec),
neither checked against the 24.282 text: message types 1 and 3; Payload IEI
0x78 as TLV-E (two length octets); content types TEXT=1 ... ENHANCED
STATUS=6; disposition request types DELIVERY=1, READ=2, DELIVERY AND READ=3.
From the second implementation alone: InReplyTo message ID IEI 0x21 (TV, 16
octets), SDS disposition request type as a type 1 IE with IEI 8 in the high
half-octet, Application ID IEI 0x22 (TV, 1 octet) and Extended application
ID IEI 0x7D (TLV-E).  Application IDs are skipped on decode, not modelled.

**PROJECT-DEFINED** reading, labelled at the constant: the date and time is
an unsigned big-endian count of seconds since 1970-01-01T00:00:00Z (as the
second implementation writes it; the 24.282 epoch was not retrieved).

Security-protected messages (33.180) are refused.  Decoding raises
:class:`McdataError` on anything truncated, oversize (above :data:`MAX_BYTES`)
or unknown, and no other exception.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

SIGNALLING_MIME_TYPE = "application/vnd.3gpp.mcdata-signalling"
PAYLOAD_MIME_TYPE = "application/vnd.3gpp.mcdata-payload"
MAX_BYTES = 64 * 1024  # PROJECT-DEFINED bound on either part

# Message types (24.282 §15.2.2) [S].
SDS_SIGNALLING_PAYLOAD = 0x01
DATA_PAYLOAD = 0x03
# The two high bits of the message type octet mark protected messages (one
# implementation, citing §15.2.2 [S]).
_PROTECTION_BITS = 0xC0

# Information element identifiers [S].
IEI_IN_REPLY_TO = 0x21  # TV, the 16-octet message ID replied to
IEI_APPLICATION_ID = 0x22  # TV, one octet; skipped
IEI_DISPOSITION = 0x8  # type 1 TV: IEI in the high half-octet, value in the low
IEI_PAYLOAD = 0x78  # TLV-E
IEI_SECURED_PAYLOAD = 0x7A  # TLV-E, 33.180 protected; refused
IEI_EXTENDED_APPLICATION_ID = 0x7D  # TLV-E; skipped

# SDS disposition request types (§15.2.3) [S].
DISPOSITION_DELIVERY = 1
DISPOSITION_READ = 2
DISPOSITION_DELIVERY_AND_READ = 3
DISPOSITIONS = frozenset({DISPOSITION_DELIVERY, DISPOSITION_READ,
                          DISPOSITION_DELIVERY_AND_READ})

# Payload content types [S].
CONTENT_TEXT = 1
CONTENT_BINARY = 2
CONTENT_HYPERLINKS = 3
CONTENT_FILEURL = 4
CONTENT_LOCATION = 5
CONTENT_ENHANCED_STATUS = 6
CONTENT_TYPES = frozenset(range(CONTENT_TEXT, CONTENT_ENHANCED_STATUS + 1))

DATE_TIME_OCTETS = 5  # seconds since the Unix epoch, big-endian: PROJECT-DEFINED reading
_MAX_DATE_TIME = (1 << (8 * DATE_TIME_OCTETS)) - 1
_FIXED = 1 + DATE_TIME_OCTETS + 16 + 16  # type, date and time, conversation ID, message ID
_MAX_PAYLOADS = 255  # the number of payloads is one octet
_MAX_IE_LENGTH = 0xFFFF  # TLV-E length is two octets


class McdataError(ValueError):
    """The MCData message is not one this module accepts; the message says why."""


@dataclass(frozen=True)
class SdsSignalling:
    """SDS SIGNALLING PAYLOAD (24.282 §15.1.2)."""

    date_time: int
    """When the message was sent, seconds since the Unix epoch (see module docstring)."""
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    in_reply_to: uuid.UUID | None = None
    disposition: int | None = None
    """The SDS disposition request type, :data:`DISPOSITION_DELIVERY` etc.; None: none."""

    def encode(self) -> bytes:
        if not 0 <= self.date_time <= _MAX_DATE_TIME:
            raise McdataError(f"date and time {self.date_time} does not fit "
                              f"{DATE_TIME_OCTETS} octets")
        if self.disposition is not None and self.disposition not in DISPOSITIONS:
            raise McdataError(f"unknown SDS disposition request type {self.disposition}")
        out = bytearray([SDS_SIGNALLING_PAYLOAD])
        out += self.date_time.to_bytes(DATE_TIME_OCTETS, "big")
        out += self.conversation_id.bytes + self.message_id.bytes
        # The order of §15.1.2's table; decode takes any order.
        if self.in_reply_to is not None:
            out += bytes([IEI_IN_REPLY_TO]) + self.in_reply_to.bytes
        if self.disposition is not None:
            out.append(IEI_DISPOSITION << 4 | self.disposition)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> SdsSignalling:
        """Decode the signalling part; raises :class:`McdataError` and nothing else."""
        _check_size(data, "SDS SIGNALLING PAYLOAD")
        _check_type(data, SDS_SIGNALLING_PAYLOAD, "SDS SIGNALLING PAYLOAD")
        if len(data) < _FIXED:
            raise McdataError(f"SDS SIGNALLING PAYLOAD truncated: {len(data)} octets, "
                              f"at least {_FIXED} needed")
        date_time = int.from_bytes(data[1:1 + DATE_TIME_OCTETS], "big")
        offset = 1 + DATE_TIME_OCTETS
        conversation_id = uuid.UUID(bytes=bytes(data[offset:offset + 16]))
        message_id = uuid.UUID(bytes=bytes(data[offset + 16:offset + 32]))
        in_reply_to: uuid.UUID | None = None
        disposition: int | None = None
        seen: set[int] = set()
        offset = _FIXED
        while offset < len(data):
            iei = data[offset]
            if iei >> 4 == IEI_DISPOSITION:
                key, value = IEI_DISPOSITION, iei & 0x0F
                if value not in DISPOSITIONS:
                    raise McdataError(f"unknown SDS disposition request type {value} at "
                                      f"offset {offset}")
                disposition = value
                offset += 1
            elif iei == IEI_IN_REPLY_TO:
                key = iei
                _need(data, offset, 17, "InReplyTo message ID")
                in_reply_to = uuid.UUID(bytes=bytes(data[offset + 1:offset + 17]))
                offset += 17
            elif iei == IEI_APPLICATION_ID:
                # For an application, not the user; not modelled, so passed over.
                key = iei
                _need(data, offset, 2, "Application ID")
                offset += 2
            elif iei == IEI_EXTENDED_APPLICATION_ID:
                key = iei
                offset += 3 + _tlv_e_length(data, offset, "Extended application ID")
            else:
                raise McdataError(f"unknown information element {iei:#04x} at offset {offset}")
            if key in seen:
                raise McdataError(f"information element {key:#x} repeated")
            seen.add(key)
        return cls(date_time, conversation_id, message_id, in_reply_to, disposition)


@dataclass(frozen=True)
class DataPayload:
    """DATA PAYLOAD (24.282 §15.1.4): (content type, data) per payload, in order."""

    contents: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        if not 1 <= len(self.contents) <= _MAX_PAYLOADS:
            raise McdataError(f"{len(self.contents)} payloads: 1 to {_MAX_PAYLOADS} fit")
        out = bytearray([DATA_PAYLOAD, len(self.contents)])
        for content_type, data in self.contents:
            if content_type not in CONTENT_TYPES:
                raise McdataError(f"unknown payload content type {content_type}")
            length = 1 + len(data)
            if length > _MAX_IE_LENGTH:
                raise McdataError(f"payload of {len(data)} octets does not fit a TLV-E")
            out += bytes([IEI_PAYLOAD]) + length.to_bytes(2, "big") + bytes([content_type])
            out += data
        if len(out) > MAX_BYTES:
            raise McdataError(f"DATA PAYLOAD of {len(out)} octets exceeds {MAX_BYTES}")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> DataPayload:
        """Decode the payload part; raises :class:`McdataError` and nothing else."""
        _check_size(data, "DATA PAYLOAD")
        _check_type(data, DATA_PAYLOAD, "DATA PAYLOAD")
        if len(data) < 2:
            raise McdataError("DATA PAYLOAD truncated: no number of payloads")
        count = data[1]
        if count == 0:
            raise McdataError("DATA PAYLOAD announces no payloads")
        contents: list[tuple[int, bytes]] = []
        offset = 2
        while offset < len(data):
            iei = data[offset]
            if iei == IEI_SECURED_PAYLOAD:
                raise McdataError("security-protected payloads (33.180) are not supported")
            if iei != IEI_PAYLOAD:
                raise McdataError(f"unknown information element {iei:#04x} at offset {offset}")
            length = _tlv_e_length(data, offset, "Payload")
            if length < 1:
                raise McdataError(f"Payload at offset {offset} lacks its content type")
            content_type = data[offset + 3]
            if content_type not in CONTENT_TYPES:
                raise McdataError(f"unknown payload content type {content_type} at offset "
                                  f"{offset + 3}")
            if len(contents) == count:
                raise McdataError(f"more Payload IEs than the {count} announced")
            contents.append((content_type, bytes(data[offset + 4:offset + 3 + length])))
            offset += 3 + length
        if len(contents) != count:
            raise McdataError(f"{len(contents)} Payload IEs, {count} announced")
        return cls(tuple(contents))

    def text(self) -> str:
        """The first TEXT payload, decoded as UTF-8; :class:`McdataError` if there is none."""
        for content_type, data in self.contents:
            if content_type == CONTENT_TEXT:
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise McdataError(f"TEXT payload is not UTF-8: {exc}") from None
        raise McdataError("DATA PAYLOAD has no TEXT payload")


def text_payload(text: str) -> DataPayload:
    """A DATA PAYLOAD carrying ``text`` as one TEXT payload, UTF-8 encoded."""
    return DataPayload(((CONTENT_TEXT, text.encode("utf-8")),))


def _check_size(data: bytes, what: str) -> None:
    if len(data) > MAX_BYTES:
        raise McdataError(f"{what} of {len(data)} octets exceeds {MAX_BYTES}")
    if not data:
        raise McdataError(f"{what} is empty")


def _check_type(data: bytes, expected: int, what: str) -> None:
    message_type = data[0]
    if message_type == expected:
        return
    if (message_type & ~_PROTECTION_BITS) == expected:
        raise McdataError(f"message type {message_type:#04x}: security-protected {what} is "
                          "not supported")
    raise McdataError(f"message type {message_type:#04x} is not {what} ({expected:#04x})")


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise McdataError(f"{what} at offset {offset} truncated: {size} octets needed, "
                          f"{len(data) - offset} left")


def _tlv_e_length(data: bytes, offset: int, what: str) -> int:
    """The length of the TLV-E at ``offset``, checked to fit in ``data``."""
    _need(data, offset, 3, what)
    length = int.from_bytes(data[offset + 1:offset + 3], "big")
    _need(data, offset, 3 + length, what)
    return length
