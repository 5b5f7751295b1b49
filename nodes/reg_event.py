"""The registrar's side of the reg event package (RFC 3680; 24.229 §5.4.2.1).

The UE subscribes to its own registration state after registering
(24.229 §5.1.1.3), and so does the P-CSCF that serves it (§5.2.3); the
S-CSCF (our SIP core) is the notifier.  It NOTIFYs full ``reginfo``
documents (RFC 3680 §5.1) with a version per subscription:

* once a subscription is accepted (RFC 6665 §4.2.1.2), with the current state;
* when the registration ends: the user's de-REGISTER (contact event
  ``unregistered``) or a network-initiated de-registration (``rejected``),
  with ``Subscription-State: terminated;reason=noresource`` (RFC 6665
  §4.1.3: the state watched no longer exists).

**Project choice**: while a third-party REGISTER of the AOR is outstanding
(24.229 §5.4.1.7, sent right after the 200), the first NOTIFY of a new
subscription waits for its answer, at most one transaction timeout, so the
document it carries already says whether the MC service AS kept the
registration.  A refusal's status and Warning travel in the ``<contact>``
as the PROJECT-DEFINED extension :data:`reginfo.SERVICE_AUTHORISATION`
(RFC 3680's schema admits elements of other namespaces there): a UE has no
other way to learn why it was de-registered.

Bounded: :data:`MAX_SUBSCRIPTIONS` in all, :data:`MAX_PER_AOR` per AOR,
:data:`MAX_REFUSALS` refusals remembered for :data:`REFUSAL_MEMORY` seconds.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from emulator.documents import reginfo
from emulator.sip.builder import new_tag
from emulator.sip.dialog import Dialog
from emulator.sip.events import TransactionKey
from emulator.sip.headers import NameAddress
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.registrar import Binding

from .sipnode import SipNode

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100_000
MAX_PER_AOR = 8
MAX_REFUSALS = 10_000
REFUSAL_MEMORY = 300.0
DEFAULT_EXPIRES = 3761
"""RFC 3680 §4.2 (a SUBSCRIBE without Expires)."""
MAX_EXPIRES = 600_000
"""24.229 §5.1.1.3: what a UE asks for; nothing longer is granted."""


@dataclass(slots=True)
class Subscription:
    aor: str
    dialog: Dialog
    expires_at: float
    version: int = 0
    notified: bool = False
    """The first NOTIFY went out (a later one may follow; never before it)."""


@dataclass(frozen=True)
class Refused:
    """How the MC service AS answered the third-party REGISTER that ended a registration."""

    status: int
    reason: str
    warnings: tuple[str, ...]
    at: float


@dataclass
class RegEventNotifier:
    """Subscriptions to reg event for the AORs of one registrar.

    ``bindings(aor)`` gives the live bindings; ``now()`` the registrar's clock.
    """

    node: SipNode
    bindings: Callable[[str], list[Binding]]
    now: Callable[[], float]
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    """By Call-ID: a SUBSCRIBE dialog is ours alone (RFC 6665 §4.1.2.4)."""
    _by_aor: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each AOR's subscriptions' Call-IDs: what a registration's change looks up.  A tuple,
    not a dict: nearly every AOR has one subscriber (its P-CSCF), at most
    :data:`MAX_PER_AOR`, and a dict per registered user cost 136 bytes more."""
    _settling: dict[str, int] = field(default_factory=dict)
    """AORs with a third-party REGISTER outstanding (how many)."""
    _refused: OrderedDict[str, Refused] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.subscriptions)

    # -- SUBSCRIBE ---------------------------------------------------------------
    def on_subscribe(self, request: Request, transaction: TransactionKey, *,
                     authorised: bool) -> None:
        """A SUBSCRIBE with ``Event: reg`` (initial, refresh or ``Expires: 0``)."""
        node = self.node
        existing = self.subscriptions.get(request.call_id)
        if request.to.tag is not None:
            if existing is None or existing.dialog.local.tag != request.to.tag:
                node.reply(request, transaction, 481)  # RFC 6665 §4.2.1.1: no such dialog
                return
            self._refresh(existing, request, transaction)
            return
        aor = request.uri.aor
        if not authorised:
            # 24.229 §5.4.2.1.1: the user itself, its P-CSCF or its AS may subscribe.
            node.reply(request, transaction, 403, "Forbidden (not allowed to watch "
                                                  "this registration)")
            return
        if not request.contacts:
            node.reply(request, transaction, 400, "Bad Request (SUBSCRIBE without Contact)")
            return
        refused = self._recent_refusal(aor)
        if not self.bindings(aor) and refused is None and aor not in self._settling:
            node.reply(request, transaction, 403, "Forbidden (not registered)")
            return
        self._purge(aor)
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            self._purge()
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS or \
                len(self._by_aor.get(aor, ())) >= MAX_PER_AOR:
            node.reply(request, transaction, 503, "Service Unavailable (too many "
                                                  "subscriptions)", headers=(("Retry-After",
                                                                              "60"),))
            return
        expires = self._granted(request)
        tag = new_tag()
        response = request.make_response(200, to_tag=tag)
        response.headers.add("Expires", expires)
        response.headers.add("Contact", NameAddress(node.uri(
            transport=request.top_via.transport.lower(), lr=False)))
        dialog = Dialog.as_uas(request, tag)
        if expires == 0:  # a fetch (RFC 6665 §4.4.3): one NOTIFY, no subscription
            node.endpoint.send_response(response, transaction)
            self._notify(Subscription(aor, dialog, self.now()), terminated=True)
            return
        subscription = Subscription(aor, dialog, self.now() + expires)
        self._drop(request.call_id)  # a new subscription on a Call-ID replaces the old
        self.subscriptions[request.call_id] = subscription
        self._by_aor[aor] = (*self._by_aor.get(aor, ()), request.call_id)
        node.endpoint.send_response(response, transaction)
        if aor not in self._settling:
            self._notify(subscription)

    def _refresh(self, subscription: Subscription, request: Request,
                 transaction: TransactionKey) -> None:
        expires = self._granted(request)
        response = request.make_response(200)
        response.headers.add("Expires", expires)
        self.node.endpoint.send_response(response, transaction)
        if expires == 0:  # unsubscribe: a last NOTIFY (RFC 6665 §4.1.2.3)
            self._drop(request.call_id)
            self._notify(subscription, terminated=True)
            return
        subscription.expires_at = self.now() + expires
        if subscription.notified:
            self._notify(subscription)

    @staticmethod
    def _granted(request: Request) -> int:
        try:
            asked = request.expires
        except ValueError:
            asked = None
        return DEFAULT_EXPIRES if asked is None else max(0, min(asked, MAX_EXPIRES))

    # -- what the registrar tells us ----------------------------------------------
    def settling(self, aor: str) -> None:
        """A third-party REGISTER of ``aor`` went out: hold first NOTIFYs until it is answered."""
        self._settling[aor] = self._settling.get(aor, 0) + 1

    def settled(self, aor: str) -> None:
        """The AS kept the registration: the held subscriptions get their first NOTIFY."""
        left = self._settling.get(aor, 1) - 1
        if left > 0:
            self._settling[aor] = left
            return
        self._settling.pop(aor, None)
        for subscription in self._of(aor):
            if not subscription.notified:
                self._notify(subscription)

    def ended(self, aor: str, previous: Iterable[Binding], event: str, *,
              refused: Refused | None = None) -> None:
        """The registration of ``aor`` ended (``event``: unregistered, rejected, ...): every
        subscriber is told, and every subscription ends with it."""
        self._settling.pop(aor, None)
        if refused is not None:
            self._refused[aor] = refused
            self._refused.move_to_end(aor)
            while len(self._refused) > MAX_REFUSALS:
                self._refused.popitem(last=False)
        gone = tuple(previous)
        for subscription in self._of(aor):
            self._drop(subscription.dialog.call_id)
            self._notify(subscription, terminated=True, gone=gone, event=event,
                         refused=refused)

    def _purge(self, aor: str | None = None) -> None:
        """Forget lapsed subscriptions (RFC 6665 §4.2.2: they simply expire): ``aor``'s,
        or (a full table) all of them."""
        now = self.now()
        calls = self._by_aor.get(aor, ()) if aor is not None else tuple(self.subscriptions)
        for call_id in [c for c in calls if self.subscriptions[c].expires_at <= now]:
            self._drop(call_id)

    def _drop(self, call_id: str) -> None:
        subscription = self.subscriptions.pop(call_id, None)
        if subscription is None:
            return
        rest = tuple(c for c in self._by_aor.get(subscription.aor, ()) if c != call_id)
        if rest:
            self._by_aor[subscription.aor] = rest
        else:
            self._by_aor.pop(subscription.aor, None)

    # -- NOTIFY ------------------------------------------------------------------
    def _of(self, aor: str) -> list[Subscription]:
        return [self.subscriptions[c] for c in self._by_aor.get(aor, ())]

    def _recent_refusal(self, aor: str) -> Refused | None:
        refused = self._refused.get(aor)
        if refused is not None and refused.at + REFUSAL_MEMORY < self.now():
            del self._refused[aor]
            return None
        return refused

    def document(self, subscription: Subscription, *, gone: tuple[Binding, ...] = (),
                 event: str = "registered", refused: Refused | None = None) -> bytes:
        """The full reginfo for one subscriber (RFC 3680 §5.1), its version advanced."""
        now = self.now()
        aor = subscription.aor
        live = self.bindings(aor)
        if not live and not gone and refused is None:
            refused = self._recent_refusal(aor)
        contacts = [reginfo.ContactInfo(_id(b), "active", "registered", str(b.contact.uri),
                                        b.remaining(now)) for b in live]
        for binding in gone:
            contacts.append(reginfo.ContactInfo(
                _id(binding), "terminated", event, str(binding.contact.uri), 0,
                _authorisation(refused)))
        if not live and not gone and refused is not None:
            contacts.append(reginfo.ContactInfo(f"{_digest(aor)}-refused", "terminated",
                                                "rejected", aor, 0, _authorisation(refused)))
        state = "active" if live else "terminated"
        document = reginfo.RegInfo(subscription.version, "full", (
            reginfo.RegistrationInfo(aor, _digest(aor), state, tuple(contacts)),))
        subscription.version += 1
        return reginfo.render(document)

    def _notify(self, subscription: Subscription, *, terminated: bool = False,
                gone: tuple[Binding, ...] = (), event: str = "registered",
                refused: Refused | None = None) -> None:
        node = self.node
        dialog = subscription.dialog
        try:
            hop = dialog.next_hop()
        except ValueError as exc:
            logger.warning("%s: subscriber of %s unreachable: %s", node.name,
                           subscription.aor, exc)
            self._drop(dialog.call_id)
            return
        body = self.document(subscription, gone=gone, event=event, refused=refused)
        subscription.notified = True
        notify = dialog.request("NOTIFY", node.endpoint.make_via(hop.transport))
        notify.headers.add("Event", reginfo.EVENT)
        if terminated:
            notify.headers.add("Subscription-State", "terminated;reason=noresource")
        else:
            left = max(0, round(subscription.expires_at - self.now()))
            notify.headers.add("Subscription-State", f"active;expires={left}")
        notify.headers.add("Contact", NameAddress(node.uri(transport=hop.transport, lr=False)))
        notify.set_body(body, reginfo.MIME_TYPE)
        call_id = dialog.call_id

        def answered(response: Response) -> None:
            # RFC 6665 §4.2.2: a subscriber that does not take the NOTIFY is gone.
            if response.status >= 300 and response.status not in (401, 407):
                self._drop(call_id)

        node.endpoint.send_request(notify, hop, answered)


def _authorisation(refused: Refused | None) -> reginfo.ServiceAuthorisation | None:
    if refused is None:
        return None
    return reginfo.ServiceAuthorisation(refused.status, refused.warnings,
                                        refused.reason[:reginfo.MAX_REASON])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _id(binding: Binding) -> str:
    return _digest(str(binding.contact.uri))
