"""The MC server: MC service authorisation from REGISTER, and the MC service AS role.

Service authorisation (24.379 §7.3.1, 33.180 §5.1.3 step C, B.10): the SIP
core's third-party REGISTER carries the UE's REGISTER as ``message/sip``; its
body holds one info document per MC service (mcptt-info, mcdata-info,
mcvideo-info), each with an access token.  For each, the MC server

1. validates the token (signature with the key provisioned for its own
   IdMS, ``iss``, ``exp``/``iat``, ``typ``, and the service's scope);
2. binds the MC service ID: the token's ``mcptt_id`` must be the registered
   IMPU (the asserted identity) and each info document's request URI must
   be that service's ID claim;
3. for a migrated user (a partner access token, which names the primary
   issuer), requires the migration profile to be provisioned here.

Refusal: ``403`` with ``Warning: 399 <host> "101 service authorisation
failed"`` (24.379 §4.4 warn-text, spec digest §4.2 [S]).  A third-party
REGISTER whose inner REGISTER carries no info body at all is accepted without
authorising anyone: that UE authorises with a PUBLISH instead (24.379 §7.3.3:
``Event: poc-settings``, poc-settings and info bodies, the user identified by
P-Asserted-Identity), answered 200 (with ``SIP-ETag``, RFC 3903 §6) or 403
with the same Warning.  ``Expires: 0`` on either ends the authorisation
(§7.3.5).

Variants, selected per MC server:

* ``normal``: partner access tokens from the partner IdMS (33.180 §5.1.4).
* ``direct`` (**non-normative**): the REGISTER carries the security token the
  primary issued for the partner; the MC server checks it itself against the
  out-of-band provisioned primary certificate.
* ``interconnection`` (23.280 §10.6.3 baseline): the REGISTER carries the
  primary access token, and the partner MC server asks the primary MC server
  with a "migration service authorisation request" over the interconnection
  link.  That request's encoding is **project-defined** (a SIP MESSAGE with
  an XML body), since the 10.6.3 table was only partly retrieved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import os
import struct
import sys
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from emulator.documents import affiliation
from emulator.documents import mcx_info
from emulator.documents import poc_settings
from emulator.documents.xmlsafe import XmlError
from emulator.documents.xmlsafe import parse_xml
from emulator.expiry import ExpiringTable
from emulator.expiry import TableFull
from emulator.identity.oidc import MigrationProfile
from emulator.identity.tokens import ACCESS_TOKEN_TYP
from emulator.identity.tokens import SECURITY_TOKEN_TYP
from emulator.identity.tokens import TokenError
from emulator.identity.tokens import TokenValidator
from emulator.identity.tokens import scopes_of
from emulator.keystore import load_trusted_issuers
from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_request
from emulator.sip.errors import RemoteProtocolError
from emulator.sip.events import Address
from emulator.sip.events import TransactionKey
from emulator.sip.headers import NameAddress
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.message import parse_message
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.sip.multipart import MultipartError
from emulator.sip.multipart import body_parts
from emulator.sip.uri import URI
from emulator.transport.base import Tap

from .base import describe
from .base import own_token_validator
from .base import tls_client
from .base import tls_server
from .group_call import GroupCalls
from .journal import Tables
from .plan import McServerOptions
from .plan import NodePlan
from .plan import mc_service_psi
from .sipnode import SipNode

logger = logging.getLogger(__name__)

WARNING_SERVICE_AUTHORISATION_FAILED = "101 service authorisation failed"
MIGRATION_AUTH_TYPE = "application/vnd.mcx-emulator.migration-authorisation+xml"  # project
MIGRATION_AUTH_NS = "urn:mcx-emulator:xml:ns:migration-authorisation:1.0"  # project-defined
SERVICE_FOR_METHOD = {"INVITE": "mcptt", "MESSAGE": "mcdata"}
_FINGERPRINT = 8
"""Bytes of a decision's documents' fingerprint (:meth:`ServiceAuthoriser.again`)."""
_UNTIL = struct.Struct("<d")
MC_TOKENS_REMEMBERED = 1024
"""Signature checks the MC server's own validator keeps (8,192 elsewhere, ~0.15 kB each):
a user's re-REGISTER is renewed from its remembered decision (:meth:`ServiceAuthoriser.again`)
before any token is looked at, so the memo serves only documents that changed around an
unchanged token.  At 10,000 users the full memo had cost ~0.12 kB each."""
MAX_USERS = 200_000
"""Most MC service authorisations held at once (PROJECT-DEFINED); then 503."""
RETRY_AFTER = 60


class AuthorisationRefused(Exception):
    """Service authorisation failed; the message says why (it goes in the reason phrase)."""


SERVICES = tuple(f.service for f in mcx_info.FORMATS.values())
"""The MC services an authorisation may cover: "mcptt", "mcdata", "mcvideo"."""


@dataclass(frozen=True, slots=True, init=False)
class AuthorisedUser:
    """An MC service user this MC server has authorised, per service.

    Each service's MC service ID in a slot of its own (None: not authorised for it), not a
    dict per user: with 10,000 users authorised, that dict was ~0.12 kB of each one's
    ~10 kB over the nodes (``benchmarks/scale.py``)."""

    impu: str
    mcptt: str | None
    mcdata: str | None
    mcvideo: str | None
    primary_identity: str | None
    expires_at: float
    basis: bytes | None
    """What the decision rested on, while it holds (:meth:`ServiceAuthoriser.again`): the
    documents' fingerprint, and the moment their tokens stop being acceptable.  None: no
    shortcut (restored from the journal, or a decision not made from tokens alone)."""

    def __init__(self, impu: str, services: Mapping[str, str], primary_identity: str | None,
                 expires_at: float, basis: bytes | None = None) -> None:
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"no such MC service: {sorted(unknown)}")
        object.__setattr__(self, "impu", impu)
        for service in SERVICES:
            object.__setattr__(self, service, services.get(service))
        object.__setattr__(self, "primary_identity", primary_identity)
        object.__setattr__(self, "expires_at", expires_at)
        object.__setattr__(self, "basis", basis)

    def renewed(self, expires_at: float) -> AuthorisedUser:
        """The same authorisation, until ``expires_at``."""
        renewed = object.__new__(AuthorisedUser)
        for name in self.__slots__:
            object.__setattr__(renewed, name, getattr(self, name))
        object.__setattr__(renewed, "expires_at", expires_at)
        return renewed

    @property
    def services(self) -> dict[str, str]:
        """service ("mcptt", "mcdata", "mcvideo") -> MC service ID, for those authorised."""
        return {service: value for service in SERVICES
                if (value := getattr(self, service)) is not None}


@dataclass
class ServiceAuthoriser:
    """The MC server's decision, as plain code (no I/O; time passed in)."""

    own_issuer: str
    own_tokens: TokenValidator
    audience: str | None = None
    """The aud access tokens must name: this MC system's resource servers (RFC 9068 §4)."""
    migration_profiles: frozenset[str] = frozenset()
    """Partner-assigned MCPTT IDs that have a migration profile here."""
    primary_tokens: TokenValidator | None = None
    """Direct variant: the out-of-band provisioned primary IdMS keys."""
    own_idms_address: str = ""
    primary_identities: Mapping[tuple[str, str], MigrationProfile] = field(default_factory=dict)
    """(primary iss, primary sub) -> the migration profile: the user's primary MCPTT ID and
    the partner-assigned MC service IDs."""
    _fingerprint_key: bytes = field(default_factory=lambda: os.urandom(16), repr=False)

    def again(self, user: AuthorisedUser | None, register: Request, *, now: float,
              expires: int) -> AuthorisedUser | None:
        """``user``'s authorisation renewed for ``expires`` seconds, when ``register``
        carries the very info documents that authorised it (the same bytes) and every
        token in them is still acceptable: what :meth:`authorise` would conclude, without
        parsing the documents and checking the tokens again.  None: :meth:`authorise`
        decides.

        A UE re-registers with the info documents and tokens it registered with until
        they change (24.379 §7.3.1); parsing and checking them took about a quarter of the
        MC server's CPU per REGISTER in place (``benchmarks/migration_path.py``, py-spy).
        Whatever else the decision reads is fixed for the MC server's life (its keys, its
        issuer, the migration profiles), and its clock only moves on.  The fingerprint is
        a keyed BLAKE2b of 8 bytes, the key this process's own: documents made to match
        another's fingerprint would have to guess it."""
        if user is None or user.basis is None or \
                now > _UNTIL.unpack_from(user.basis, _FINGERPRINT)[0]:
            return None
        fingerprint = self._fingerprint(self._info_parts(register))
        if not hmac.compare_digest(user.basis[:_FINGERPRINT], fingerprint):
            return None
        return user.renewed(now + expires)

    def _fingerprint(self, parts: list[BodyPart]) -> bytes:
        """Of the info documents, in order: all the decision reads of the request."""
        digest = hashlib.blake2b(digest_size=_FINGERPRINT, key=self._fingerprint_key)
        for part in parts:
            digest.update(b"%s\0%d\0" % (part.mime_type.encode(), len(part.content)))
            digest.update(part.content)
        return digest.digest()

    def _info_parts(self, register: Request) -> list[BodyPart]:
        """The body's mcptt-info, mcdata-info and mcvideo-info parts, in order."""
        try:
            parts = body_parts(register)
        except MultipartError as exc:
            raise AuthorisationRefused(f"bad multipart body: {exc}") from None
        if not parts:
            raise AuthorisationRefused(f"{register.method} carries no MC service info")
        info = [part for part in parts if part.mime_type in mcx_info.FORMATS]
        if not info:
            raise AuthorisationRefused("no mcptt/mcdata/mcvideo info document in REGISTER")
        return info

    def info_documents(self, register: Request) -> list[mcx_info.ServiceInfo]:
        return self._documents(self._info_parts(register))

    @staticmethod
    def _documents(parts: list[BodyPart]) -> list[mcx_info.ServiceInfo]:
        documents = []
        for part in parts:
            try:
                documents.append(mcx_info.parse(part.content, mcx_info.FORMATS[part.mime_type]))
            except XmlError as exc:
                raise AuthorisationRefused(f"bad {part.mime_type}: {exc}") from None
        return documents

    def authorise(self, register: Request, impu: str, *, now: float,
                  expires: int) -> AuthorisedUser:
        """Check every info document of ``register`` for ``impu``; raise on any failure."""
        services: dict[str, str] = {}
        refused: list[str] = []
        primary_identity: str | None = None
        until: float | None = math.inf
        parts = self._info_parts(register)
        for info in self._documents(parts):
            fmt = info.format
            if not info.access_token:
                raise AuthorisationRefused(f"{fmt.service}-info has no access token")
            claims, acceptable_until = self._check_token(info.access_token, fmt, now)
            until = None if until is None or acceptable_until is None else \
                min(until, acceptable_until)
            if fmt.scope not in scopes_of(claims):
                # Per service (24.379 §7.3.1, 24.282, 24.281 alike): the others may stand.
                refused.append(f"{fmt.service} token: scope lacks {fmt.scope!r}")
                continue
            if "primary_iss" in claims or claims.get("iss") != self.own_issuer:
                primary_identity = str(claims.get("primary_mcptt_id", claims.get("mcptt_id")))
            service_id = self._service_id(claims, fmt)
            if info.request_uri is not None and info.request_uri != service_id:
                raise AuthorisationRefused(f"{fmt.service}-request-uri {info.request_uri} is "
                                           f"not the token's {fmt.service}_id")
            if fmt.service == "mcptt" and service_id != impu:
                raise AuthorisationRefused(f"token's mcptt_id {service_id} is not the "
                                           f"registered identity {impu}")
            # Interned: the MCPTT ID is the IMPU, which keys the tables (``URI.aor``).
            services[fmt.service] = sys.intern(service_id)
        if not services and refused:
            raise AuthorisationRefused("; ".join(refused))
        if "mcptt" not in services and not any(v == impu for v in services.values()):
            # Without an MCPTT document nothing ties the tokens to the IMPU.
            raise AuthorisationRefused("no info document names the registered identity")
        if primary_identity is not None and impu not in self.migration_profiles:
            raise AuthorisationRefused(f"no migration profile for {impu} in this MC system")
        # Every document's token was checked (there is at least one): ``until`` is finite.
        basis = None if until is None else self._fingerprint(parts) + _UNTIL.pack(until)
        return AuthorisedUser(impu, services, primary_identity, now + expires, basis)

    def _check_token(self, token: str, fmt: mcx_info.ServiceInfoFormat,
                     now: float) -> tuple[dict[str, object], float | None]:
        """The token's claims, and until when they stay acceptable (None: a decision
        not to remember, the direct variant's)."""
        try:  # the service's scope is the caller's check: a lack refuses that service only
            claims = self.own_tokens.validate(token, now=now, typ=ACCESS_TOKEN_TYP,
                                              issuer=self.own_issuer, audience=self.audience)
            return claims, self.own_tokens.valid_until(claims)
        except TokenError as exc:
            if self.primary_tokens is None:
                raise AuthorisationRefused(f"{fmt.service} token refused: {exc.description}") \
                    from None
            own_error = exc.description
        # Direct variant (non-normative): a primary security token addressed to our IdMS.
        try:
            claims = self.primary_tokens.validate(token, now=now, typ=SECURITY_TOKEN_TYP,
                                                  audience=self.own_idms_address)
        except TokenError as exc:
            raise AuthorisationRefused(f"{fmt.service} token refused: {own_error}; as a "
                                       f"security token: {exc.description}") from None
        profile = self.primary_identities.get((str(claims["iss"]), str(claims["sub"])))
        if profile is None:
            raise AuthorisationRefused(f"no migration profile for {claims['sub']}")
        # The partner identities stand in for the primary ones, as in a partner token.
        return {**claims, **profile.mc_ids, "primary_mcptt_id": profile.primary_mcptt_id,
                "primary_iss": claims["iss"]}, None

    @staticmethod
    def _service_id(claims: Mapping[str, object], fmt: mcx_info.ServiceInfoFormat) -> str:
        value = claims.get(f"{fmt.service}_id")
        if not isinstance(value, str):
            raise AuthorisationRefused(f"token has no {fmt.service}_id claim")
        return value


class McServer(SipNode):
    """An MC server (MCPTT/MCData/MCVideo) of one MC system.

    Time comes from its endpoint: ``wall_clock()`` for token ``exp``/``iat``
    (RFC 7519 §4.1.4) and the authorisations' expiry alike.
    """

    def __init__(self, plan: NodePlan, *, tap: Tap | None = None) -> None:
        options = plan.options
        assert isinstance(options, McServerOptions)
        super().__init__(plan.name, plan.host, plan.sip_listeners, tap=tap,
                         server_ssl=tls_server(plan.credentials),
                         client_ssl=tls_client(plan.credentials),
                         **self.planned(plan))
        self.plan = plan
        self.mode = options.mode
        self.clock_offset = options.clock_offset
        self.authoriser = _authoriser(plan, options)
        interconnection = plan.peer("mc-server") if options.mode == "interconnection" else None
        self.interconnection = interconnection.address if interconnection else None
        self.allowed_partners = {k: frozenset(v) for k, v in options.allowed_partners.items()}
        self.users: ExpiringTable[str, AuthorisedUser] = ExpiringTable(MAX_USERS)
        """IMPU -> its MC service authorisation, until it expires."""
        self.by_mcdata_id: dict[str, str] = {}
        """MCData ID -> the IMPU of the user authorised with it: what an MCData message's
        target is reached by.  The only service ID looked up (an MCPTT ID is the IMPU,
        and no MCVideo request is routed): held for it alone, it costs each user one
        entry, not three keyed by pairs."""
        self.sip_cores = frozenset(p.host for p in plan.peers_of("sip-core"))
        """Hosts allowed to send third-party REGISTERs; empty trusts any (tests, tools)."""
        self.refusals: deque[tuple[str, str]] = deque(maxlen=1000)
        """The latest refusals (AOR, reason), for inspection; bounded under load."""
        self.psis = {mc_service_psi(s, options.domain): s for s in ("mcptt", "mcdata")} \
            if options.domain else {}
        """Our public service identities -> the MC service each serves."""
        self.groups = {g.group_id: g for g in options.groups}
        self.affiliations: dict[str, set[str]] = {}
        """Group ID -> the MCPTT IDs affiliated to it (23.280 §10.8.3)."""
        self.group_calls = GroupCalls(self, self._term_route)

    def state(self) -> dict[str, object]:
        self._purge_expired()  # a lapsed authorisation is not counted, request or not
        return {**describe(self.plan, self.sip_state()), "guards": self.endpoint.guard_state(),
                "overload": self.overload.state(),
                "mode": self.mode,
                "authorised_users": len(self.users), "refusals": len(self.refusals),
                "affiliations": {g: sorted(m) for g, m in self.affiliations.items()},
                "group_calls": len(self.group_calls),
                "restored": self.journal.restored}

    # -- what survives a restart (the MC service authorisations) ------------------------
    def recover(self, tables: Tables) -> None:
        now = self.now()
        for impu, row in tables.get("users", {}).items():
            try:
                user = AuthorisedUser(impu, dict(row["services"]), row["primary_identity"],
                                      float(row["expires_at"]))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("%s: kept authorisation of %s unusable: %s", self.name, impu, exc)
                continue
            if user.expires_at > now and not self.authorised(user):
                break  # full: the rest register again

    def authorised(self, user: AuthorisedUser) -> bool:
        """Hold ``user``'s authorisation, written through before anyone is told; False
        when :data:`MAX_USERS` others are authorised (the caller answers 503)."""
        now = self.now()
        old = self.users.get(user.impu, now)
        try:
            self.users.put(user.impu, user, user.expires_at, now=now)
        except TableFull:
            return False
        if old is not None:
            self._forget_ids(old)
        if user.mcdata is not None:
            self.by_mcdata_id[user.mcdata] = user.impu
        self.journal.put("users", user.impu, {
            "services": user.services, "primary_identity": user.primary_identity,
            "expires_at": user.expires_at})
        return True

    def _forget_ids(self, user: AuthorisedUser) -> None:
        mcdata = user.mcdata
        if mcdata is not None and self.by_mcdata_id.get(mcdata) == user.impu:
            del self.by_mcdata_id[mcdata]

    def forget(self, impu: str) -> None:
        self._dropped(impu, self.users.pop(impu))

    def _dropped(self, impu: str, user: AuthorisedUser | None) -> None:
        if user is not None:
            self._forget_ids(user)
        self.journal.delete("users", impu)
        for members in self.affiliations.values():  # de-registered: affiliated no more
            members.discard(impu)

    def now(self) -> float:
        return self.endpoint.wall_clock() + self.clock_offset

    def _purge_expired(self) -> None:
        for impu, user in self.users.purge(self.now()):
            self._dropped(impu, user)

    def warning(self) -> str:
        return f'399 {self.host} "{WARNING_SERVICE_AUTHORISATION_FAILED}"'

    def refuse(self, request: Request, transaction: TransactionKey, reason: str) -> None:
        logger.info("%s: service authorisation failed: %s", self.name, reason)
        self.refusals.append((request.to.uri.aor, reason))
        self.reply(request, transaction, 403, f"Forbidden ({reason})"[:200],
                   headers=(("Warning", self.warning()),))

    def unavailable(self, request: Request, transaction: TransactionKey) -> None:
        """No room for another authorisation: 503 with Retry-After (RFC 3261 §21.5.4)."""
        logger.warning("%s: %d users authorised, refusing more", self.name, MAX_USERS)
        self.reply(request, transaction, 503, "Service Unavailable (too many users)",
                   headers=(("Retry-After", str(RETRY_AFTER)),))

    # -- requests --------------------------------------------------------------
    def on_request(self, request: Request, source: Address,
                   transaction: TransactionKey | None) -> None:
        assert transaction is not None
        # Lapsed authorisations go, with their MC service IDs and affiliations, before
        # anything is decided on them (a group call must not invite their users).
        self._purge_expired()
        interconnection = request.method == "MESSAGE" and request.content_type is not None \
            and request.content_type.mime_type == MIGRATION_AUTH_TYPE
        if not interconnection and request.to.tag is None and \
                request.method in ("REGISTER", "PUBLISH", *SERVICE_FOR_METHOD) and \
                self.sip_cores and source.host not in self.sip_cores:
            # Whom such a request is for (or from) is what our own S-CSCF asserts (RFC 3325
            # §5, 24.229 §5.4.1.7): from anyone else it would be a claim, not an assertion.
            self.reply(request, transaction, 403, "Forbidden (not this system's SIP core)")
            return
        if request.method == "REGISTER":
            self.on_third_party_register(request, transaction)
        elif request.method == "PUBLISH" and request.event_package == poc_settings.EVENT:
            self.on_publish_authorisation(request, transaction)
        elif request.method == "PUBLISH" and request.event_package == affiliation.EVENT:
            self.on_affiliation(request, transaction)
        elif request.method == "BYE" and (self.group_calls.on_bye(request, transaction) or
                                          self.group_calls.on_member_bye(request, transaction)):
            return
        elif interconnection:
            self.on_migration_authorisation_request(request, transaction)
        elif request.method in SERVICE_FOR_METHOD and request.to.tag is None:
            self.on_service_request(request, transaction)
        else:
            self.pop_own_route(request)
            destination = self.next_hop(request)
            if destination is None:
                self.reply(request, transaction, 404)
            else:
                self.forward(request, transaction, destination)

    def on_third_party_register(self, request: Request, transaction: TransactionKey) -> None:
        impu = request.to.uri.aor
        expires = request.expires or 0
        if expires == 0:
            self.forget(impu)
            self.reply(request, transaction, 200)
            return
        self._purge_expired()
        content_type = request.content_type
        if content_type is None or content_type.mime_type != "message/sip":
            self.refuse(request, transaction, "third-party REGISTER without a message/sip body")
            return
        try:
            inner = parse_message(request.body)
        except RemoteProtocolError as exc:
            self.refuse(request, transaction, f"message/sip body is not SIP: {exc.reason}")
            return
        if not isinstance(inner, Request) or inner.method != "REGISTER":
            self.refuse(request, transaction, "message/sip body is not a REGISTER")
            return
        if not inner.body:
            # Registered, not yet authorised: a PUBLISH will carry the tokens (§7.3.3).
            self.reply(request, transaction, 200)
            return
        if self.mode == "interconnection" and impu in self.authoriser.migration_profiles:
            # A migrating user: the primary MC system decides (23.280 §10.6.3).
            self.ask_primary(request, inner, impu, expires, transaction)
            return
        now = self.now()
        try:
            user = self.authoriser.again(self.users.get(impu, now), inner, now=now,
                                         expires=expires) or \
                self.authoriser.authorise(inner, impu, now=now, expires=expires)
        except AuthorisationRefused as exc:
            self.refuse(request, transaction, str(exc))
            return
        except ValueError as exc:  # a header of the UE's REGISTER that does not parse
            self.refuse(request, transaction, f"malformed REGISTER inside: {exc}")
            return
        if not self.authorised(user):
            self.unavailable(request, transaction)
            return
        if logger.isEnabledFor(logging.INFO):  # the list is built only to be logged
            logger.info("%s: authorised %s for %s", self.name, impu, ", ".join(user.services))
        self.reply(request, transaction, 200)

    def on_publish_authorisation(self, request: Request, transaction: TransactionKey) -> None:
        """24.379 §7.3.3-7.3.5: service authorisation (or its end) by PUBLISH."""
        asserted = request.headers.get("P-Asserted-Identity")
        if asserted is None:
            self.refuse(request, transaction, "PUBLISH without P-Asserted-Identity")
            return
        try:
            impu = NameAddress.parse(asserted).uri.aor
            expires = request.expires
        except ValueError as exc:
            self.refuse(request, transaction, f"malformed PUBLISH: {exc}")
            return
        expires = 3600 if expires is None else expires
        if expires == 0:
            self.forget(impu)
        else:
            self._purge_expired()
            now = self.now()
            try:
                user = self.authoriser.again(self.users.get(impu, now), request, now=now,
                                             expires=expires) or \
                    self.authoriser.authorise(request, impu, now=now, expires=expires)
            except AuthorisationRefused as exc:
                self.refuse(request, transaction, str(exc))
                return
            if not self.authorised(user):
                self.unavailable(request, transaction)
                return
            logger.info("%s: authorised %s for %s (PUBLISH)", self.name, impu,
                        ", ".join(user.services))
        self.reply(request, transaction, 200, headers=(
            ("SIP-ETag", hashlib.sha256(f"{impu}{self.now()}".encode()).hexdigest()[:16]),
            ("Expires", str(expires))))

    def on_ack(self, request: Request, source: Address) -> None:
        if not self.group_calls.on_ack(request):  # ours (a group call's caller) ends here
            super().on_ack(request, source)

    def on_stray_response(self, response: Response, source: Address) -> None:
        if not (response.cseq.method == "INVITE" and 200 <= response.status < 300
                and self.group_calls.on_member_2xx(response)):
            super().on_stray_response(response, source)

    async def stop(self) -> None:
        self.group_calls.unacked.close()
        await super().stop()

    def _term_route(self) -> tuple[NameAddress, Address]:
        core = self.plan.peer("sip-core")
        assert core is not None, "an MC server reaches its users through its SIP core"
        params: tuple[tuple[str, str | None], ...] = (("lr", None),)
        if core.transport != "udp":
            params = (("transport", core.transport), *params)
        uri = URI("sip", user="term", host=core.host, port=core.port, params=params)
        return NameAddress(uri), core.address

    # -- affiliation (23.280 §10.8.3; 24.379 §9.2.2) ---------------------------------
    def on_affiliation(self, request: Request, transaction: TransactionKey) -> None:
        """A user affiliates itself to groups by PUBLISH (PIDF with the affiliation
        extension): it must be authorised for MCPTT and a member of each group."""
        asserted = request.headers.get("P-Asserted-Identity")
        try:
            impu = NameAddress.parse(asserted).uri.aor if asserted else ""
            document = affiliation.parse(request.body)
            expires = 3600 if request.expires is None else request.expires
        except (ValueError, XmlError) as exc:
            self.reply(request, transaction, 400, f"Bad Request ({exc})"[:200])
            return
        user = self.users.get(impu, self.now())
        if user is None or user.mcptt is None:
            self.refuse(request, transaction, f"{impu} is not authorised for MCPTT")
            return
        if document.entity != user.mcptt:
            self.reply(request, transaction, 403, "Forbidden (a user affiliates only itself)")
            return
        for entry in document.affiliations:
            group = self.groups.get(entry.group)
            if group is None or impu not in group.members:
                self.reply(request, transaction, 403,
                           f"Forbidden (not a member of {entry.group})"[:200])
                return
        for entry in document.affiliations:
            self.affiliations.setdefault(entry.group, set()).add(impu)
        logger.info("%s: %s affiliated to %s", self.name, impu,
                    ", ".join(a.group for a in document.affiliations))
        self.reply(request, transaction, 200, headers=(
            ("SIP-ETag", hashlib.sha256(f"{impu}{self.now()}".encode()).hexdigest()[:16]),
            ("Expires", str(expires))))

    # -- sessions addressed to our PSI ----------------------------------------------------
    def _info(self, request: Request, fmt: mcx_info.ServiceInfoFormat
              ) -> mcx_info.ServiceInfo | None:
        try:
            return next((mcx_info.parse(p.content, fmt) for p in body_parts(request)
                         if p.mime_type == fmt.mime_type), None)
        except ValueError:  # broken multipart, XML or Content-Type: no usable info
            return None

    def _replace_info(self, request: Request, info: mcx_info.ServiceInfo) -> None:
        parts = [BodyPart(info.format.mime_type, mcx_info.render(info))
                 if p.mime_type == info.format.mime_type else p for p in body_parts(request)]
        rebuilt = MultipartBody.build(parts)
        request.set_body(rebuilt.to_bytes(), rebuilt.content_type)

    def on_psi_request(self, request: Request, transaction: TransactionKey, service: str,
                       caller: str) -> None:
        """A session for our PSI: its mcptt-info (mcdata-info) says what and to whom."""
        fmt = mcx_info.MCDATA if service == "mcdata" else mcx_info.MCPTT
        info = self._info(request, fmt)
        if info is None or not info.request_uri:
            self.reply(request, transaction, 400, f"Bad Request (no {fmt.service}-info "
                                                  f"{fmt.service}-request-uri)")
            return
        self.pop_own_route(request)
        if request.method == "INVITE" and info.session_type == "prearranged":
            group = self.groups.get(info.request_uri)
            if group is None:
                self.reply(request, transaction, 404, "Not Found (no such group)")
                return
            affiliated = self.affiliations.get(group.group_id, set())
            if caller not in affiliated:
                self.reply(request, transaction, 403, "Forbidden (not affiliated to the group)",
                           headers=(("Warning", self.warning()),))
                return
            members = [m for m in group.members if m in affiliated and m != caller]
            self.group_calls.start(request, transaction, caller, group.group_id, members)
            return
        target = info.request_uri
        if service == "mcdata":
            # The target's MCData ID names an authorised user: reach it by its IMPU.
            target = self.by_mcdata_id.get(info.request_uri, "")
            if not target:
                self.reply(request, transaction, 404, "Not Found (no such MCData user)")
                return
        else:  # a private call (24.379 §11.1.1): the called party is the Request-URI now
            self._replace_info(request, mcx_info.ServiceInfo(
                fmt, None, info.request_uri, None, session_type=info.session_type or "private",
                calling_user_id=caller, called_party_id=info.request_uri))
        request.uri = URI.parse(target)
        if request.method == "INVITE":
            self.record_route(request)
        destination = self.next_hop(request)
        if destination is None:
            self.reply(request, transaction, 404)
            return
        self.forward(request, transaction, destination)

    def on_service_request(self, request: Request, transaction: TransactionKey) -> None:
        """AS role for a private call (INVITE) or short data (MESSAGE): the caller must be
        authorised for that MC service."""
        service = SERVICE_FOR_METHOD[request.method]
        preferred = request.headers.get("P-Asserted-Service") or \
            request.headers.get("P-Preferred-Service") or ""
        if request.method == "INVITE" and "icsi.mcvideo" in preferred:
            service = "mcvideo"  # an MCVideo private call (24.281), by its ICSI
        asserted = request.headers.get("P-Asserted-Identity")
        caller = NameAddress.parse(asserted).uri.aor if asserted else request.from_.uri.aor
        user = self.users.get(caller, self.now())
        if user is None or service not in user.services:
            self.reply(request, transaction, 403,
                       f"Forbidden ({caller} is not authorised for {service.upper()})",
                       headers=(("Warning", self.warning()),))
            return
        psi = self.psis.get(request.uri.aor)
        if psi is not None:
            self.on_psi_request(request, transaction, psi, caller)
            return
        self.pop_own_route(request)
        self.record_route(request)
        destination = self.next_hop(request)
        if destination is None:
            self.reply(request, transaction, 404)
            return
        self.forward(request, transaction, destination)

    # -- interconnection baseline (23.280 §10.6.3) --------------------------------
    def ask_primary(self, request: Request, inner: Request, impu: str, expires: int,
                    transaction: TransactionKey) -> None:
        if self.interconnection is None:
            self.refuse(request, transaction, "no interconnection to the primary MC system")
            return
        try:
            infos = self.authoriser.info_documents(inner)
        except AuthorisationRefused as exc:
            self.refuse(request, transaction, str(exc))
            return
        mcptt = next((i for i in infos if i.format.service == "mcptt"), None)
        if mcptt is None or not mcptt.access_token:  # the caller checked the profile
            self.refuse(request, transaction, "no MCPTT access token for the primary MC system")
            return
        primary_id, partner_ids = next(
            ((m.primary_mcptt_id, m.mc_ids) for m in self.authoriser.primary_identities.values()
             if m.mc_ids.get("mcptt_id") == impu), ("", {}))
        services = {info.format.service: partner_ids[f"{info.format.service}_id"]
                    for info in infos if f"{info.format.service}_id" in partner_ids}
        destination = self.interconnection
        target = URI("sip", user="mcptt-server", host=destination.host, port=destination.port)
        message = new_request(
            "MESSAGE", target, via=self.endpoint.make_via(destination.transport),
            from_=NameAddress(self.uri("mcptt-server", lr=False)), to=NameAddress(target),
            call_id=new_call_id(self.host))
        message.set_body(render_migration_request(impu, primary_id, mcptt.access_token,
                                                  self.plan.system), MIGRATION_AUTH_TYPE)

        def answered(response: Response) -> None:
            if response.status < 200:
                return
            if response.status == 408 or response.status >= 500:
                # No decision of the primary's: unreached, or failed (RFC 3261 §21.5.5).
                self.reply(request, transaction, 504,
                           f"Server Time-out (primary MC system: {response.reason})"[:200])
                return
            if response.status >= 300:
                self.refuse(request, transaction, f"primary MC system refused: {response.reason}")
                return
            if self.authorised(AuthorisedUser(impu, services, primary_id,
                                              self.now() + expires)):
                self.reply(request, transaction, 200)
            else:
                self.unavailable(request, transaction)

        self.endpoint.send_request(message, destination, answered)

    def on_migration_authorisation_request(self, request: Request,
                                           transaction: TransactionKey) -> None:
        """Primary side of the interconnection baseline: is this user allowed to migrate?"""
        try:
            root = parse_xml(request.body)
        except XmlError as exc:
            self.reply(request, transaction, 400, f"Bad Request ({exc})"[:200])
            return
        ns = f"{{{MIGRATION_AUTH_NS}}}"
        token = (root.findtext(f"{ns}access-token") or "").strip()
        partner_system = (root.findtext(f"{ns}partner-mc-system") or "").strip()
        primary_id = (root.findtext(f"{ns}primary-mc-service-id") or "").strip()
        try:
            claims = self.authoriser.own_tokens.validate(
                token, now=self.now(), typ=ACCESS_TOKEN_TYP, issuer=self.authoriser.own_issuer,
                audience=self.authoriser.audience, required_scope=mcx_info.MCPTT.scope)
        except TokenError as exc:
            self.reply(request, transaction, 403, f"Forbidden ({exc.description})"[:200])
            return
        if claims.get("mcptt_id") != primary_id:
            self.reply(request, transaction, 403, "Forbidden (token is for another user)")
            return
        # The user may migrate, and to the system asking (its migrate_to).
        if partner_system not in self.allowed_partners.get(primary_id, frozenset()):
            self.reply(request, transaction, 403, "Forbidden (user may not migrate)")
            return
        self.reply(request, transaction, 200)


def render_migration_request(partner_id: str, primary_id: str, access_token: str,
                             partner_system: str = "") -> bytes:
    """The interconnection baseline's request body (project-defined XML, escaped by
    ElementTree): who asks (the partner MC system), for whom, with the user's token."""
    root = ET.Element(f"{{{MIGRATION_AUTH_NS}}}migration-authorisation-request")
    for name, text in (("partner-mc-system", partner_system),
                       ("partner-mc-service-id", partner_id),
                       ("primary-mc-service-id", primary_id), ("access-token", access_token)):
        ET.SubElement(root, f"{{{MIGRATION_AUTH_NS}}}{name}").text = text
    data: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True,
                              default_namespace=MIGRATION_AUTH_NS)
    return data


def _authoriser(plan: NodePlan, options: McServerOptions) -> ServiceAuthoriser:
    """The service authorisation of the plan: own tokens, migrants, and (direct variant,
    non-normative) the primary keys provisioned out of band."""
    primary_tokens = None
    if options.mode == "direct" and plan.credentials.trust_dir is not None:
        trusted, refused = load_trusted_issuers(plan.credentials.trust_dir,
                                                now=dt.datetime.now(dt.UTC))
        for peer, reason in refused.items():
            logger.warning("%s does not trust %s: %s", plan.name, peer, reason)
        primary_tokens = TokenValidator(trusted)
    return ServiceAuthoriser(
        own_issuer=options.issuer, own_tokens=own_token_validator(
            options.issuer, plan.credentials, remembered=MC_TOKENS_REMEMBERED),
        audience=options.audience, migration_profiles=frozenset(options.migrant_identities),
        primary_tokens=primary_tokens, own_idms_address=options.issuer,
        primary_identities={(m.primary_issuer, m.primary_sub): m
                            for m in options.migration_profiles})
