"""Credentials on disk: where each MC system keeps its keys, and reading them back.

Layout under a run's PKI directory (project-defined)::

    <pki>/<system>/ca.crt, ca.key                  the system's own CA
    <pki>/<system>/idms-signing.crt, .key          its IdMS token-signing credential
    <pki>/<system>/tls/<node>.crt, .key            TLS servers (HTTPS, SIP over TLS)
    <pki>/<system>/trust/<peer>/issuer             what <system> was given, out of band,
    <pki>/<system>/trust/<peer>/ca.crt             about <peer>'s IdMS: its issuer URL, CA
    <pki>/<system>/trust/<peer>/idms-signing.crt   and signing certificate (never a key)

:class:`SystemFiles` is that layout, so the orchestration that writes it
and the plans that name its files agree.  A node reads only the paths its
plan gives (:func:`read_credential`, :func:`load_trusted_issuers`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from emulator.identity.pki import Credential
from emulator.identity.pki import load_credential
from emulator.identity.trust import TrustError
from emulator.identity.trust import VerificationKey
from emulator.identity.trust import verification_key


class SystemFiles:
    """Where one MC system's (or the local PLMN's) credentials live under ``pki``."""

    def __init__(self, pki: Path, system: str) -> None:
        self.base = pki / system
        self.ca_certificate = self.base / "ca.crt"
        self.ca_key = self.base / "ca.key"
        self.signing_certificate = self.base / "idms-signing.crt"
        self.signing_key = self.base / "idms-signing.key"
        self.trust = self.base / "trust"
        """Other systems' IdMS issuers, one folder each, provisioned out of band."""

    def tls_certificate(self, node: str) -> Path:
        return self.base / "tls" / f"{node}.crt"

    def tls_key(self, node: str) -> Path:
        return self.base / "tls" / f"{node}.key"


def write_credential(directory: Path, stem: str, credential: Credential) -> tuple[Path, Path]:
    """``<stem>.crt`` and ``<stem>.key`` (mode 0600) in ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate = directory / f"{stem}.crt"
    certificate.write_bytes(credential.certificate_pem())
    key = directory / f"{stem}.key"
    key.write_bytes(credential.key_pem())
    key.chmod(0o600)
    return certificate, key


def read_credential(certificate: Path | str, key: Path | str) -> Credential:
    return load_credential(Path(certificate).read_bytes(), Path(key).read_bytes())


def read_certificate(path: Path | str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_trusted_issuers(trust_dir: Path | str, *, now: dt.datetime
                         ) -> tuple[list[VerificationKey], dict[str, str]]:
    """Every peer IdMS provisioned into ``trust_dir`` (33.180 §5.1.4.2), checked ``now``.

    Returns the usable keys and, per peer, why one was refused, so a node
    can start and report rather than crash on a bad provisioning.
    """
    keys: list[VerificationKey] = []
    refused: dict[str, str] = {}
    trust = Path(trust_dir)
    if not trust.is_dir():
        return keys, refused
    for peer in sorted(p for p in trust.iterdir() if p.is_dir()):
        try:
            issuer = (peer / "issuer").read_text().strip()
            anchor = read_certificate(peer / "ca.crt")
            signer = read_certificate(peer / "idms-signing.crt")
            keys.append(verification_key(issuer, signer, [anchor], now=now))
        except (OSError, ValueError, TrustError) as exc:
            refused[peer.name] = str(exc)
    return keys, refused
