"""SSLContext construction for the SIP-over-TLS and HTTPS listeners and their clients.

``ssl`` loads a certificate chain only from files, so servers take the
paths a node's plan names (see :mod:`emulator.keystore`); clients take the
CA certificates they trust as PEM bytes.  Both may write the TLS key log
that lets a capture be decrypted.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path


def server_context(certificate: Path | str, key: Path | str, *,
                   keylog: Path | str | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the PEM ``certificate`` and ``key`` files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    if keylog is not None:
        context.keylog_filename = str(keylog)
    return context


def client_context(ca_pems: Iterable[bytes], *,
                   keylog: Path | str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting only the given CA certificates."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cadata="".join(p.decode() for p in ca_pems))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if keylog is not None:
        context.keylog_filename = str(keylog)
    return context
