"""The outside tools the tests use, and MCX_REQUIRE_TOOLS.

With ``MCX_REQUIRE_TOOLS=1`` (``.ci/run`` sets it), a missing tool or missing root fails the
run at its start, and a test that skips anyway is reported as failed: CI cannot stay green
with part of the suite silently not run.  Without it (a developer's machine), tests that
need a tool skip and say why.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from emulator.sip import compiled

REQUIRE_TOOLS = os.environ.get("MCX_REQUIRE_TOOLS") == "1"

TOOLS = {
    "tcpdump": "tcpdump",
    "tshark": "tshark",
    "capinfos": "wireshark-common",
    "sipp": "sip-tester",
    "kamailio": "kamailio",
    "sipvicious_svmap": "PyPI sipvicious (the test extra)",
    "sipvicious_svwar": "PyPI sipvicious (the test extra)",
}
"""Command: where it comes from."""


def which(tool: str) -> str | None:
    """The tool's path: on PATH, or beside this interpreter (the venv's console scripts)."""
    found = shutil.which(tool)
    if found is None:
        beside = Path(sys.executable).parent / tool
        found = str(beside) if beside.exists() else None
    return found


def missing() -> list[str]:
    """What a complete run lacks here: tools, and root (captures, namespaces, prlimit)."""
    out = [f"{tool} ({source})" for tool, source in TOOLS.items() if which(tool) is None]
    # What make setup builds is what CI must test (the sources are tested on their own too:
    # tests/sip/test_compiled.py); a deliberate MCX_SIP_PURE=1 does not excuse a missing build.
    if (state := compiled.choose(environ={})) != "compiled":
        out.append(f"the compiled SIP core (gcc; make setup builds it): {state}")
    if os.geteuid() != 0:
        out.append("root (kernel captures, network namespaces)")
    return out


def have(*tools: str, root: bool = False) -> bool:
    """Whether ``tools`` (and root, if asked) are here.  For a check inside a test that
    runs only with them: under MCX_REQUIRE_TOOLS the run has already failed if not."""
    return all(which(tool) for tool in tools) and (not root or os.geteuid() == 0)
