"""Run sipp (Debian package sip-tester) against an in-process node and read its verdict."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "sipp"
SIPP = shutil.which("sipp")


@dataclass(frozen=True)
class SippResult:
    returncode: int
    successful: int
    failed: int
    sent: int
    retransmissions: int
    screen: str


async def run_sipp(scenario: str, target: str, *, local_ip: str, calls: int, rate: int,
                   transport: str = "u1", extra: tuple[str, ...] = (),
                   timeout: float = 60.0) -> SippResult:
    """Run ``sipp -sf scenario`` to ``target`` and parse its final screen."""
    assert SIPP is not None, "sipp is not installed (Debian package sip-tester)"
    with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
        screen = Path(tmp) / "screen.txt"
        process = await asyncio.create_subprocess_exec(
            SIPP, "-sf", str(SCENARIOS / scenario), target, "-i", local_ip, "-p", "0",
            "-t", transport, "-m", str(calls), "-r", str(rate), "-nostdin",
            "-trace_screen", "-screen_file", str(screen), *extra,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        text = screen.read_text(errors="replace") if screen.exists() else ""
    return SippResult(process.returncode or 0, _cumulative(text, "Successful call"),
                      _cumulative(text, "Failed call"), *_register_row(text), text)


def _cumulative(text: str, counter: str) -> int:
    match = re.search(rf"{counter}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(match.group(1)) if match else -1


def _register_row(text: str) -> tuple[int, int]:
    match = re.search(r"REGISTER -+>\s+(\d+)\s+(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
