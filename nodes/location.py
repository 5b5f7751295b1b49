"""The registrar's location service: bindings per address-of-record (RFC 3261 §10.3).

Plain data and plain functions of ``now``; the registrar node drives it.
Stored per binding: the Contact as sent, Call-ID and CSeq (for §10.3 step 7
ordering), the absolute expiry, and the Path vector (RFC 3327 §5.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.sip.headers import Contact
from emulator.sip.uri import URI


@dataclass(slots=True)
class Binding:
    """One Contact bound to an address-of-record."""

    contact: Contact
    call_id: str
    cseq: int
    expires_at: float
    path: tuple[str, ...] = ()
    source: str = ""

    def remaining(self, now: float) -> int:
        return max(0, round(self.expires_at - now))


BindingKey = tuple[str, str, str, int | None, str]


def contact_key(uri: URI) -> BindingKey:
    """The fields §19.1.4 compares, as a dictionary key."""
    return (uri.scheme, uri.user or "", uri.host.lower(), uri.port, uri.transport)


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


@dataclass
class LocationService:
    """All bindings, keyed by AOR, then by the contact key."""

    policy: RegistrarPolicy = field(default_factory=RegistrarPolicy)
    _bindings: dict[str, dict[BindingKey, Binding]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    @property
    def aor_count(self) -> int:
        return len(self._bindings)

    def lookup(self, aor: str, *, now: float) -> list[Binding]:
        """Live bindings of ``aor``; expired ones are purged on the way."""
        bindings = self._bindings.get(aor)
        if not bindings:
            return []
        for key in [k for k, b in bindings.items() if b.expires_at <= now]:
            del bindings[key]
        if not bindings:
            del self._bindings[aor]
            return []
        return list(bindings.values())

    def snapshot(self, aor: str) -> dict[BindingKey, Binding]:
        """A copy of ``aor``'s bindings, to :meth:`restore` if a registration is refused later."""
        return dict(self._bindings.get(aor, {}))

    def restore(self, aor: str, snapshot: dict[BindingKey, Binding]) -> None:
        if snapshot:
            self._bindings[aor] = snapshot
        else:
            self._bindings.pop(aor, None)

    def aors(self) -> list[str]:
        return list(self._bindings)

    def purge(self, *, now: float) -> int:
        """Drop every expired binding; returns how many went."""
        removed = 0
        for aor in list(self._bindings):
            before = len(self._bindings.get(aor, {}))
            removed += before - len(self.lookup(aor, now=now))
        return removed

    def update(self, aor: str, contacts: list[Contact], *, header_expires: int | None,
               call_id: str, cseq: int, now: float, path: tuple[str, ...] = (),
               source: str = "") -> list[Binding]:
        """Apply one REGISTER's Contacts atomically (§10.3 steps 6-8).

        Returns the bindings after the update.  Raises
        :class:`RegistrationRefused` for a bad wildcard (400), an interval
        too brief (423 with Min-Expires) or an out-of-order CSeq (500).
        """
        policy = self.policy
        current = {k: b for k, b in self._bindings.get(aor, {}).items() if b.expires_at > now}
        if any(c.wildcard for c in contacts):
            # §10.2.2 / §10.3 step 6: "*" only alone and only with Expires: 0.
            if len(contacts) != 1 or header_expires != 0:
                raise RegistrationRefused(400, "Bad Request (wildcard Contact needs Expires: 0)")
            for binding in current.values():
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise RegistrationRefused(500, "Server Internal Error (CSeq out of order)")
            self._bindings.pop(aor, None)
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
        if current:
            self._bindings[aor] = current
        else:
            self._bindings.pop(aor, None)
        return list(current.values())
