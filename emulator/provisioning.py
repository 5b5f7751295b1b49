"""Each MC system's key material on disk, and the out-of-band provisioning step.

Layout under a PKI directory (project-defined)::

    <dir>/<system>/ca.crt, ca.key                  the system's own CA
    <dir>/<system>/idms-signing.crt, .key          its IdMS token-signing credential
    <dir>/<system>/tls/<node>.crt, .key            TLS servers (HTTPS, SIP over TLS)
    <dir>/<system>/trust/<peer>/issuer             what <system> was given, out of band,
    <dir>/<system>/trust/<peer>/ca.crt             about <peer>'s IdMS: its issuer URL, CA
    <dir>/<system>/trust/<peer>/idms-signing.crt   and signing certificate (never a key)

:func:`provision` is the out-of-band step of 33.180 §5.1.4.2, made explicit
and visible: it copies a certificate from one system's directory into the
other's trust directory, and nothing else ever crosses.  A scenario can
withhold it or corrupt the certificate on the way.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .identity.pki import (
    Credential,
    issue_server_certificate,
    issue_signing_certificate,
    load_credential,
    make_ca,
)
from .identity.trust import TrustError, VerificationKey, verification_key

PROVISION_MODES = ("normal", "withhold", "corrupt")


@dataclass(frozen=True)
class SystemMaterial:
    """One MC system's credentials, as loaded from or written to its directory."""

    name: str
    ca: Credential
    signing: Credential
    tls: Mapping[str, Credential]


def _write(directory: Path, stem: str, credential: Credential) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.crt").write_bytes(credential.certificate_pem())
    key = directory / f"{stem}.key"
    key.write_bytes(credential.key_pem())
    key.chmod(0o600)


def _read(directory: Path, stem: str) -> Credential:
    return load_credential((directory / f"{stem}.crt").read_bytes(),
                           (directory / f"{stem}.key").read_bytes())


def create_system(directory: Path, name: str, tls_hosts: Mapping[str, list[str]], *,
                  now: dt.datetime, signing_algorithm: str = "RS256",
                  signing_not_before: dt.datetime | None = None,
                  signing_days: int = 365) -> SystemMaterial:
    """Make and store a CA, an IdMS signing credential and TLS server credentials."""
    base = directory / name
    ca = make_ca(f"MC system {name}", now=now)
    signing = issue_signing_certificate(ca, f"{name} IdMS token signing", now=now,
                                        algorithm=signing_algorithm,
                                        not_before=signing_not_before, days=signing_days)
    tls = {node: issue_server_certificate(ca, node, hosts=hosts, now=now)
           for node, hosts in tls_hosts.items()}
    _write(base, "ca", ca)
    _write(base, "idms-signing", signing)
    for node, credential in tls.items():
        _write(base / "tls", node, credential)
    return SystemMaterial(name, ca, signing, tls)


def load_system(directory: Path, name: str) -> SystemMaterial:
    base = directory / name
    tls_dir = base / "tls"
    tls = {path.stem: _read(tls_dir, path.stem) for path in sorted(tls_dir.glob("*.crt"))}
    return SystemMaterial(name, _read(base, "ca"), _read(base, "idms-signing"), tls)


def provision(directory: Path, source: str, target: str, issuer: str, *,
              mode: str = "normal") -> Path | None:
    """Give ``target`` what it needs to trust ``source``'s IdMS (33.180 §5.1.4.2).

    Copies ``source``'s CA certificate and IdMS signing certificate, never a
    key, with the issuer URL they vouch for.  ``withhold`` provisions
    nothing (and removes an earlier provisioning); ``corrupt`` damages the
    signing certificate's signature on the way, as a broken transfer would.
    Returns the trust directory written, or None when withheld.
    """
    if mode not in PROVISION_MODES:
        raise ValueError(f"mode must be one of {', '.join(PROVISION_MODES)}")
    trust = directory / target / "trust" / source
    if trust.exists():
        shutil.rmtree(trust)
    if mode == "withhold":
        return None
    trust.mkdir(parents=True)
    source_dir = directory / source
    shutil.copyfile(source_dir / "ca.crt", trust / "ca.crt")
    certificate = (source_dir / "idms-signing.crt").read_bytes()
    if mode == "corrupt":
        certificate = _corrupt(certificate)
    (trust / "idms-signing.crt").write_bytes(certificate)
    (trust / "issuer").write_text(issuer + "\n")
    return trust


def _corrupt(pem: bytes) -> bytes:
    """Flip one bit of the certificate's signature: still parseable, no longer valid."""
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
    der[-10] ^= 0x01  # the signature value is the DER's last field
    return x509.load_der_x509_certificate(bytes(der)).public_bytes(Encoding.PEM)


def load_trusted_issuers(directory: Path, target: str, *, now: dt.datetime
                         ) -> tuple[list[VerificationKey], dict[str, str]]:
    """Every peer IdMS provisioned into ``target``, checked now.

    Returns the usable keys and, per peer, why one was refused, so a node
    can start and report rather than crash on a bad provisioning.
    """
    keys: list[VerificationKey] = []
    refused: dict[str, str] = {}
    trust_dir = directory / target / "trust"
    if not trust_dir.is_dir():
        return keys, refused
    for peer in sorted(p for p in trust_dir.iterdir() if p.is_dir()):
        try:
            issuer = (peer / "issuer").read_text().strip()
            anchor = x509.load_pem_x509_certificate((peer / "ca.crt").read_bytes())
            signer = x509.load_pem_x509_certificate((peer / "idms-signing.crt").read_bytes())
            keys.append(verification_key(issuer, signer, [anchor], now=now))
        except (OSError, ValueError, TrustError) as exc:
            refused[peer.name] = str(exc)
    return keys, refused
