"""The PKI of a run and the out-of-band provisioning step (33.180 §5.1.4.2).

Both run before any node starts.  :func:`create_system` makes and stores a
system's CA, IdMS signing credential and TLS server credentials in the
layout of :mod:`emulator.keystore`.  :func:`provision` is the out-of-band
step, made explicit and visible: it copies a certificate from one system's
directory into the other's trust directory, and nothing else ever crosses.
A scenario can withhold it or corrupt the certificate on the way.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from emulator.identity.pki import Credential
from emulator.identity.pki import issue_server_certificate
from emulator.identity.pki import issue_signing_certificate
from emulator.identity.pki import make_ca
from emulator.keystore import SystemFiles
from emulator.keystore import read_credential
from emulator.keystore import write_credential
from emulator.topology.model import Topology

PROVISION_MODES = ("normal", "withhold", "corrupt")


@dataclass(frozen=True)
class SystemMaterial:
    """One MC system's credentials, as loaded from or written to its directory."""

    name: str
    ca: Credential
    signing: Credential
    tls: Mapping[str, Credential]


def create_system(directory: Path, name: str, tls_hosts: Mapping[str, list[str]], *,
                  now: dt.datetime, signing_algorithm: str = "RS256",
                  signing_not_before: dt.datetime | None = None,
                  signing_days: int = 365) -> SystemMaterial:
    """Make and store a CA, an IdMS signing credential and TLS server credentials."""
    files = SystemFiles(directory, name)
    ca, tls = create_network(directory, name, tls_hosts, now=now, subject=f"MC system {name}")
    signing = issue_signing_certificate(ca, f"{name} IdMS token signing", now=now,
                                        algorithm=signing_algorithm,
                                        not_before=signing_not_before, days=signing_days)
    write_credential(files.base, "idms-signing", signing)
    return SystemMaterial(name, ca, signing, tls)


def create_network(directory: Path, name: str, tls_hosts: Mapping[str, list[str]], *,
                   now: dt.datetime, subject: str) -> tuple[Credential, dict[str, Credential]]:
    """Make and store a CA and TLS server credentials only: what a local PLMN, which has no
    IdMS, needs (and the first half of :func:`create_system`)."""
    files = SystemFiles(directory, name)
    ca = make_ca(subject, now=now)
    tls = {node: issue_server_certificate(ca, node, hosts=hosts, now=now)
           for node, hosts in tls_hosts.items()}
    write_credential(files.base, "ca", ca)
    for node, credential in tls.items():
        write_credential(files.base / "tls", node, credential)
    return ca, tls


def load_system(directory: Path, name: str) -> SystemMaterial:
    files = SystemFiles(directory, name)
    tls = {path.stem: read_credential(path, path.with_suffix(".key"))
           for path in sorted((files.base / "tls").glob("*.crt"))}
    return SystemMaterial(name, read_credential(files.ca_certificate, files.ca_key),
                          read_credential(files.signing_certificate, files.signing_key), tls)


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
    trust = SystemFiles(directory, target).trust / source
    if trust.exists():
        shutil.rmtree(trust)
    if mode == "withhold":
        return None
    trust.mkdir(parents=True)
    source_files = SystemFiles(directory, source)
    shutil.copyfile(source_files.ca_certificate, trust / "ca.crt")
    certificate = source_files.signing_certificate.read_bytes()
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


def prepare_pki(topology: Topology, run_dir: Path, *, mode: str, now: dt.datetime) -> None:
    """The run's PKI, then the out-of-band step between every pair of MC systems.

    Each MC system and the local PLMN get their own CA, with TLS server
    credentials for their nodes; each IdMS then gets every other system's
    IdMS signing certificate, as ``mode`` says (normal, withhold, corrupt).
    """
    pki = run_dir / "pki"
    plmn = topology.local_plmn
    create_network(pki, plmn.name, {plmn.gateway.name: [plmn.gateway.host]}, now=now,
                   subject=f"local PLMN {plmn.name}")
    # One thread per system: each makes an RSA signing key, and cryptography lets go of the
    # GIL while it does (60-130 ms a key: most of a run's start-up, made one by one).
    with ThreadPoolExecutor(len(topology.systems), thread_name_prefix="pki") as pool:
        for made in [pool.submit(create_system, pki, system.name,
                                 {node.name: [node.host] for node in system.nodes}, now=now)
                     for system in topology.systems]:
            made.result()
    for target in topology.systems:
        for source in topology.systems:
            if source.name != target.name:
                provision(pki, source.name, target.name, source.issuer, mode=mode)
