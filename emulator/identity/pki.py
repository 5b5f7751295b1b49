"""Certificate authorities and certificates for each MC system (X.509, RFC 5280).

Sans-IO: keys and certificates are made in memory from an injected ``now``;
writing them to disk is the caller's business.  Each MC system has its own
CA; the CA issues TLS server certificates (HTTPS, SIP over TLS) whose
subjectAltName lists the node's DNS names and IP addresses, so clients can
verify a server reached by its 127.x address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Credential:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: PrivateKey

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _key_usage(*, issuer: bool) -> x509.KeyUsage:
    """digitalSignature always; keyCertSign and cRLSign for a CA (RFC 5280 §4.2.1.3)."""
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=issuer, crl_sign=issuer, encipher_only=False,
                         decipher_only=False)


def _organization(ca: Credential) -> str:
    names = ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else "MCX"


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(organization: str, *, now: dt.datetime, days: int = 3650) -> Credential:
    """A self-signed root CA (BasicConstraints CA critical, keyCertSign, SKI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{organization} Root CA", organization)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(issuer=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Credential(certificate, key)


def issue_server_certificate(ca: Credential, common_name: str, *, hosts: list[str],
                             now: dt.datetime, days: int = 825) -> Credential:
    """A TLS server certificate for ``hosts`` (DNS names and IP addresses) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    org = _organization(ca)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, org))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(issuer=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Credential(certificate, key)


def issue_signing_certificate(ca: Credential, common_name: str, *, now: dt.datetime,
                              days: int = 365, algorithm: str = "RS256",
                              not_before: dt.datetime | None = None) -> Credential:
    """The IdMS token-signing certificate (33.180 §5.1.4.2), signed by ``ca``.

    A plain signing certificate: KeyUsage digitalSignature only, no SAN and
    no EKU, which is why verifying it needs a custom end-entity policy
    (``trust.py``).  RS256 (RSA-2048) by default, as deployed IdMSs use and
    because RSA verification is the cheapest per token; ES256 on request.
    """
    key: PrivateKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm}")
    org = _organization(ca)
    start = not_before if not_before is not None else now - dt.timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, org))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(issuer=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Credential(certificate, key)


def load_credential(certificate_pem: bytes, key_pem: bytes) -> Credential:
    """A credential from PEM bytes (the caller reads the files).

    The RSA consistency check is skipped: it costs ~60 ms a key (half of a
    start-up's key work), and every key read here is one the run's own PKI
    wrote (0600, under the run directory); a damaged key still fails its first
    signature, which the token verifier then refuses.
    """
    key = serialization.load_pem_private_key(key_pem, password=None,
                                             unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("only EC and RSA keys are supported")
    return Credential(x509.load_pem_x509_certificate(certificate_pem), key)
