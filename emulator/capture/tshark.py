"""Running tshark on the emulator's captures, one way everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

PREFERENCES = ("-o", "tcp.try_heuristic_first:TRUE")
"""Heuristics before port numbers: a client's ephemeral port may be a registered one (48049
is CBSP's), which would otherwise claim the TLS of an HTTPS exchange and call it malformed."""


def tshark_command(capture: Path | str, *args: str) -> list[str]:
    """``tshark -r CAPTURE`` with the emulator's preferences, then ``args``.

    Raises FileNotFoundError when tshark is not installed (Debian package tshark).
    """
    tshark = shutil.which("tshark")
    if tshark is None:
        raise FileNotFoundError("tshark is not installed (Debian package tshark)")
    return [tshark, "-r", str(capture), *PREFERENCES, *args]
