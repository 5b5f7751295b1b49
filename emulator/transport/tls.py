"""SSLContext construction from in-memory PEM credentials.

``ssl`` only loads certificates from files, so the PEMs go to a directory
the caller owns (the run's output directory, next to the captures).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_pem: bytes, key_pem: bytes, directory: Path, name: str, *,
                   keylog: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``name``'s certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if keylog is not None:
        context.keylog_filename = str(keylog)
    return context


def client_context(ca_pems: list[bytes], *, keylog: Path | None = None) -> ssl.SSLContext:
    """A verifying client context trusting only the given CA certificates."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cadata="".join(p.decode() for p in ca_pems))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if keylog is not None:
        context.keylog_filename = str(keylog)
    return context
