"""Reading protocol facts back from a run's capture with tshark, for the tests' verdicts."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

from emulator.capture.tshark import PREFERENCES

TSHARK = shutil.which("tshark")
_JWT = re.compile(r"^[\w-]+\.([\w-]+)\.[\w-]+$")


def tshark(*args: str) -> subprocess.CompletedProcess[str]:
    assert TSHARK is not None, "tshark is not installed (Debian package tshark)"
    return subprocess.run([TSHARK, *args, *PREFERENCES], capture_output=True, text=True,
                          timeout=60)


def request_tokens(capture: Path, method: str, source: str,
                   destination: str) -> list[dict[str, object]]:
    """The claims of the access tokens in the info bodies of the ``method`` requests
    ``source`` sent ``destination``, as tshark decodes them, in capture order."""
    done = tshark("-r", str(capture), "-Y", f'sip.Method == "{method}" && ip.src == {source} '
                  f'&& ip.dst == {destination}', "-T", "fields", "-e", "xml.cdata")
    assert done.returncode == 0, done.stderr
    claims = []
    for value in done.stdout.replace("\n", ",").split(","):
        match = _JWT.match(value.strip())
        if match:
            payload = match.group(1) + "=" * (-len(match.group(1)) % 4)
            claims.append(json.loads(base64.urlsafe_b64decode(payload)))
    return claims


def sip_fields(capture: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """The ``fields`` of every SIP message matching ``display_filter``, one row each; a
    field seen more than once (an inner ``message/sip`` too) is comma-joined, outer first."""
    arguments = [a for f in fields for a in ("-e", f)]
    done = tshark("-r", str(capture), "-Y", display_filter, "-T", "fields",
                  "-E", "separator=|", *arguments)
    assert done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines() if line.strip()]
