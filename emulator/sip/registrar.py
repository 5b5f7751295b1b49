"""The registrar of RFC 3261 §10.3 with Path (RFC 3327), sans-IO.

:class:`LocationService` holds the bindings per address-of-record: the
Contact as sent, Call-ID and CSeq (for step 7 ordering), the absolute
expiry and the Path vector.  :func:`process_register` runs steps 1-8 of a
REGISTER against it and returns either the refusal to send or what was
bound; the caller decides when to answer (the SIP core first consults the
MC server).  :func:`registered_response` builds the 200 that lists every
binding.  Plain data and functions of ``now``; nothing is sent.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from dataclasses import field

from emulator.expiry import ExpiringTable
from emulator.expiry import TableFull

from .headers import Contact
from .headers import shared_strings
from .message import Request
from .message import Response
from .uri import URI


class Binding:
    """One Contact bound to an address-of-record.  The Contact is kept as its text and
    parsed when used (the parse memos make that cheap): with the reg-event dialog kept the
    same way, the SIP core's share of a registered UE fell from 5.8 to 4.3 kB
    (``benchmarks/scale.py``)."""

    __slots__ = ("_contact", "call_id", "cseq", "expires_at", "path", "source")

    def __init__(self, contact: Contact, call_id: str, cseq: int, expires_at: float,
                 path: tuple[str, ...] = (), source: str = "") -> None:
        self._contact = str(contact)
        self.call_id = call_id
        self.cseq = cseq
        self.expires_at = expires_at
        # Shared: every UE behind one P-CSCF shows the same Path and source.
        self.path = shared_strings(path)
        self.source = sys.intern(source)

    @property
    def key(self) -> BindingKey:
        """What §19.1.4 compares this Contact by (:func:`contact_key`), from its text."""
        return contact_key(self.contact.uri)

    @property
    def contact(self) -> Contact:
        return Contact.parse(self._contact)

    @property
    def contact_text(self) -> str:
        """The Contact as bound, written out: what ``str(self.contact)`` gives, without
        parsing it and writing it again (the registrar's journal keeps every binding at
        every REGISTER)."""
        return self._contact

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))

    def __repr__(self) -> str:
        return (f"Binding({self._contact!r}, call_id={self.call_id!r}, cseq={self.cseq}, "
                f"expires_at={self.expires_at})")


BindingKey = tuple[str, str, str, int | None, str]

Bindings = tuple[Binding, ...]
"""An AOR's bindings, at most one per :data:`BindingKey`, in the order they were made.

A tuple, not a dict by key: nearly every AOR has one Contact, and per registered user
the dict, its key tuple and the key's strings cost ~0.5 kB more in the SIP core
(``benchmarks/scale.py``).  A binding's key is worked out from its Contact when a
REGISTER changes the AOR, through the Contact parse memo, which that REGISTER's own
Contact has just filled."""


def contact_key(uri: URI) -> BindingKey:
    """The fields §19.1.4 compares, as a dictionary key."""
    return (uri.scheme, uri.user or "", uri.host.lower(), uri.port, sys.intern(uri.transport))


class RegistrationRefused(Exception):
    """A REGISTER that §10.3 says must fail; carries the status and extra headers."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Expiry limits of the registrar."""

    default_expires: int = 3600
    """Used when neither the Contact nor the request says (§10.2.1.1)."""
    min_expires: int = 60
    """Shorter non-zero requests get 423 with Min-Expires (§10.3 step 7)."""
    max_expires: int = 7200
    """Longer requests are shortened to this."""
    max_aors: int = 200_000
    """Most AORs registered at once (PROJECT-DEFINED); a new one beyond gets 503."""
    max_bindings: int = 16
    """Most contacts one AOR may have (PROJECT-DEFINED); more get 403."""


@dataclass
class LocationService:
    """All bindings, keyed by AOR (:data:`Bindings`)."""

    policy: RegistrarPolicy = field(default_factory=RegistrarPolicy)
    _bindings: ExpiringTable[str, Bindings] = field(init=False)
    """AOR -> its bindings, until the last of them expires."""

    def __post_init__(self) -> None:
        self._bindings = ExpiringTable(self.policy.max_aors)

    def __len__(self) -> int:
        return sum(len(b) for _, b in self._bindings.items())

    @property
    def aor_count(self) -> int:
        return len(self._bindings)

    def lookup(self, aor: str, *, now: float) -> list[Binding]:
        """Live bindings of ``aor``."""
        bindings = self._bindings.get(aor, now)
        if not bindings:
            return []
        return [b for b in bindings if b.expires_at > now]

    def purge(self, now: float) -> list[tuple[str, Bindings]]:
        """Forget every AOR whose bindings have all expired (§10.3: a binding ends at its
        expiry), O(log n) each; returns them and what they had, for their watchers."""
        return self._bindings.purge(now)

    def snapshot(self, aor: str) -> Bindings:
        """``aor``'s bindings as they are (expired ones too, until purged), to
        :meth:`restore` if a registration is refused later.  Immutable: no copy."""
        return self._bindings.get(aor, float("-inf")) or ()

    def restore(self, aor: str, snapshot: Bindings) -> None:
        """Put back what :meth:`snapshot` gave (an empty one removes the AOR); what does
        not fit any more is dropped, as if it had expired."""
        if snapshot:
            try:
                self._set(aor, snapshot, now=float("-inf"))
            except RegistrationRefused:
                self._bindings.pop(aor)
        else:
            self._bindings.pop(aor)

    def aors(self) -> list[str]:
        return list(self._bindings)

    def _set(self, aor: str, bindings: Bindings, *, now: float) -> None:
        try:
            self._bindings.put(aor, bindings, max(b.expires_at for b in bindings), now=now)
        except TableFull:
            raise RegistrationRefused(503, "Service Unavailable (location table full)",
                                      (("Retry-After", "60"),)) from None

    def update(self, aor: str, contacts: list[Contact], *, header_expires: int | None,
               call_id: str, cseq: int, now: float, path: tuple[str, ...] = (),
               source: str = "") -> list[Binding]:
        """Apply one REGISTER's Contacts atomically (§10.3 steps 6-8).

        Returns the bindings after the update.  Raises
        :class:`RegistrationRefused` for a bad wildcard (400), an interval
        too brief (423 with Min-Expires) or an out-of-order CSeq (500).
        """
        policy = self.policy
        current = {b.key: b for b in self._bindings.get(aor, now) or () if b.expires_at > now}
        if any(c.wildcard for c in contacts):
            # §10.2.2 / §10.3 step 6: "*" only alone and only with Expires: 0.
            if len(contacts) != 1 or header_expires != 0:
                raise RegistrationRefused(400, "Bad Request (wildcard Contact needs Expires: 0)")
            for binding in current.values():
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise RegistrationRefused(500, "Server Internal Error (CSeq out of order)")
            self._bindings.pop(aor)
            return []
        changes: list[tuple[BindingKey, Contact, int]] = []
        for contact in contacts:
            expires = contact.expires
            if expires is None:
                expires = header_expires if header_expires is not None else policy.default_expires
            if 0 < expires < policy.min_expires:
                raise RegistrationRefused(
                    423, "Interval Too Brief", (("Min-Expires", str(policy.min_expires)),))
            changes.append((contact_key(contact.uri), contact, min(expires, policy.max_expires)))
        for key, _, _ in changes:
            existing = current.get(key)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise RegistrationRefused(500, "Server Internal Error (CSeq out of order)")
        for key, contact, expires in changes:
            if expires == 0:
                current.pop(key, None)
            else:
                current[key] = Binding(contact, call_id, cseq, now + expires, path, source)
        if len(current) > policy.max_bindings:
            raise RegistrationRefused(403, f"Forbidden (more than {policy.max_bindings} "
                                           "contacts for one address-of-record)")
        bound = tuple(current.values())
        if bound:
            self._set(aor, bound, now=now)
        else:
            self._bindings.pop(aor)
        return list(bound)


SUPPORTED_EXTENSIONS = frozenset({"path"})


@dataclass
class Registered:
    """The outcome of an accepted REGISTER."""

    aor: str
    bindings: list[Binding]
    path: tuple[str, ...]
    previous: Bindings
    """The AOR's bindings before this request, to roll back to."""
    changed: bool
    """False for a query (no Contact): nothing was bound or removed."""

    def __init__(self, aor: str, bindings: list[Binding], path: tuple[str, ...],
                 previous: Bindings, changed: bool) -> None:
        # Written out: compiled, dataclass's own __init__ still runs interpreted (see
        # emulator.sip.compiled), ~10 times slower to call than this one mypyc builds.
        self.aor = aor
        self.bindings = bindings
        self.path = path
        self.previous = previous
        self.changed = changed


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
                        to_tag: str, date: str | None = None) -> Response:
    """Step 8: a 200 listing every current binding with its expiry, and the Path echo.

    ``date`` is the RFC 1123 ``Date`` to add (§20.17); the caller reads its wall clock.
    """
    response = request.make_response(200, to_tag=to_tag)
    for binding in registered.bindings:
        address = binding.contact.address
        assert address is not None
        response.headers.add("Contact", Contact(address.with_param(
            "expires", str(binding.remaining(now)))))
    for value in registered.path:
        response.headers.add("Path", value)
    if date is not None:
        response.headers.add("Date", date)
    return response
