"""Trust in another MC system's IdMS, provisioned out of band (33.180 §5.1.4.2).

"The primary IdMS certificate(s) used to validate the user credentials at
the partner IdMS are provisioned into the partner IdMS using an out of band
mechanism."  A :class:`ProvisionedIssuer` is that provisioning: the peer's
issuer URL, the CA that anchors it and its signing certificate.  The
certificate chain is checked once, when it is provisioned, with
``cryptography.x509.verification``; what remains per token is the validity
window of the chain (checked at each token's ``now``) and the signature.

No key material is ever fetched from the peer: nothing here reaches the
network, which is the point of "without interconnection".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.verification import Criticality
from cryptography.x509.verification import ExtensionPolicy
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store
from cryptography.x509.verification import VerificationError
from joserfc.jwk import ECKey
from joserfc.jwk import RSAKey

KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
"""kid values we issue and accept: no '/', ':' or '%', so never a path or URL."""


class TrustError(Exception):
    """A certificate cannot be trusted; the message says why."""


@dataclass(frozen=True)
class VerificationKey:
    """A public key that may verify tokens, with everything checked at provisioning.

    ``not_before``/``not_after`` is the intersection of the validity of every
    certificate in the verified chain: a token verified at a ``now`` outside
    it is refused (expired or not-yet-valid signing certificate).
    """

    issuer: str
    kid: str
    algorithm: str
    key: RSAKey | ECKey
    not_before: float
    not_after: float
    subject: str


def _signing_leaf_check(policy: object, cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("signing certificate lacks KeyUsage digitalSignature")


# A token-signing certificate has no SAN or EKU, which the WebPKI defaults
# demand; this end-entity policy asks for what a signer needs instead.
_SIGNER_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _signing_leaf_check)
)


def verify_signing_certificate(certificate: x509.Certificate, anchors: list[x509.Certificate],
                               *, now: dt.datetime) -> list[x509.Certificate]:
    """Verify ``certificate`` chains to one of ``anchors`` at ``now``; returns the chain.

    Raises :class:`TrustError` naming the failure (untrusted issuer, bad
    signature, expired, not yet valid, not a signing certificate).
    """
    if not anchors:
        raise TrustError("no trust anchor provisioned")
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(now)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                            ee_policy=_SIGNER_POLICY)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(certificate, []).chain)
    except VerificationError as exc:
        raise TrustError(f"signing certificate {certificate.subject.rfc4514_string()} "
                         f"is not trusted: {exc}") from None


def algorithm_for(certificate: x509.Certificate) -> str:
    """The JWS algorithm a certificate's key signs with (RFC 7518 §3.1)."""
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        return "ES256"
    raise TrustError(f"unsupported signing key type {type(public_key).__name__}")


def kid_for(certificate: x509.Certificate) -> str:
    """The key id of a signing certificate: its SHA-256 fingerprint, shortened.

    Derived from the certificate, so both sides agree without exchanging
    anything but the certificate itself.
    """
    return certificate.fingerprint(hashes.SHA256()).hex()[:16]


def verification_key(issuer: str, certificate: x509.Certificate,
                     anchors: list[x509.Certificate], *, now: dt.datetime) -> VerificationKey:
    """Check ``certificate``'s chain once and turn it into a :class:`VerificationKey`."""
    chain = verify_signing_certificate(certificate, anchors, now=now)
    algorithm = algorithm_for(certificate)
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        key: RSAKey | ECKey = RSAKey(public, public)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        key = ECKey(public, public)
    else:  # algorithm_for has refused it already
        raise TrustError(f"unsupported signing key {type(public).__name__}")
    not_before = max(c.not_valid_before_utc for c in chain).timestamp()
    not_after = min(c.not_valid_after_utc for c in chain).timestamp()
    return VerificationKey(issuer, kid_for(certificate), algorithm, key, not_before, not_after,
                           certificate.subject.rfc4514_string())
