"""RFC 3261 §10.3 REGISTER processing, shared by the plain registrar and the SIP core.

:func:`process_register` runs steps 1-8 against a :class:`LocationService`
and returns either the refusal to send or what was bound; the caller
decides when to answer (the SIP core first consults the MC server).
:func:`registered_response` builds the 200 that lists every binding.
Pure code: ``now`` is passed in, nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate

from emulator.sip.headers import Contact
from emulator.sip.message import Request, Response

from .location import Binding, BindingKey, LocationService, RegistrationRefused

SUPPORTED_EXTENSIONS = frozenset({"path"})


@dataclass
class Registered:
    """The outcome of an accepted REGISTER."""

    aor: str
    bindings: list[Binding]
    path: tuple[str, ...]
    previous: dict[BindingKey, Binding]
    """The AOR's bindings before this request, to roll back to."""
    changed: bool
    """False for a query (no Contact): nothing was bound or removed."""


def process_register(request: Request, *, domains: set[str], location: LocationService,
                     now: float, to_tag: str) -> Registered | Response:
    """Apply ``request`` (§10.3 steps 1-8); a :class:`Response` is the refusal to send."""
    # Step 1: only our own domains.
    if request.uri.host.lower() not in domains:
        return request.make_response(404, "Not Found (domain not served here)", to_tag=to_tag)
    # Step 2 / §8.2.2.3: every Require tag must be understood.
    unsupported = request.option_tags("Require") - SUPPORTED_EXTENSIONS
    if unsupported:
        response = request.make_response(420, to_tag=to_tag)
        response.headers.add("Unsupported", ", ".join(sorted(unsupported)))
        return response
    try:
        to = request.to.uri
        aor = to.aor  # step 5: the address-of-record is the To URI
        contacts = request.contacts
        header_expires = request.expires
    except ValueError as exc:
        return request.make_response(400, f"Bad Request ({exc})", to_tag=to_tag)
    if to.host.lower() not in domains:
        return request.make_response(404, "Not Found (AOR not in this domain)", to_tag=to_tag)
    # RFC 3327 §5.3: keep the Path vector when the UA supports it.
    path = tuple(request.headers.values("Path")) \
        if "path" in request.option_tags("Supported") else ()
    previous = location.snapshot(aor)
    try:
        if contacts:  # steps 6-7
            bindings = location.update(aor, contacts, header_expires=header_expires,
                                       call_id=request.call_id, cseq=request.cseq.seq,
                                       now=now, path=path)
        else:  # step 6: a query
            bindings = location.lookup(aor, now=now)
    except RegistrationRefused as refused:
        response = request.make_response(refused.status, refused.reason, to_tag=to_tag)
        for name, value in refused.headers:
            response.headers.add(name, value)
        return response
    return Registered(aor, bindings, path, previous, bool(contacts))


def registered_response(request: Request, registered: Registered, *, now: float,
                        to_tag: str) -> Response:
    """Step 8: a 200 listing every current binding with its expiry, and the Path echo."""
    response = request.make_response(200, to_tag=to_tag)
    for binding in registered.bindings:
        address = binding.contact.address
        assert address is not None
        response.headers.add("Contact", Contact(address.with_param(
            "expires", str(binding.remaining(now)))))
    for value in registered.path:
        response.headers.add("Path", value)
    response.headers.add("Date", formatdate(usegmt=True))
    return response
