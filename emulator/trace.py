"""A message trace shared by every endpoint of a run, printed as a ladder.

Each endpoint's capture tap feeds :meth:`Trace.tap`; the trace keeps what was
*sent* (each message once), labelled with node names.  The pcap capture is
the authoritative record; this trace is what the terminal shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emulator.sip.events import Address


@dataclass(frozen=True, slots=True)
class TraceEntry:
    at: float
    source: str
    destination: str
    transport: str
    summary: str
    size: int
    step: str = ""
    clause: str = ""


@dataclass
class Trace:
    """Collects sent messages; ``names`` maps host addresses to node names."""

    names: dict[str, str] = field(default_factory=dict)
    entries: list[TraceEntry] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    step: str = ""
    clause: str = ""
    steps: list[tuple[float, str, str]] = field(default_factory=list)
    sinks: list[Callable[[str, Address, Address, bytes], None]] = field(default_factory=list)
    """Further taps fed with every message (the application-level capture writer)."""
    """(wall-clock start, step, clause): lets a capture's packets be labelled afterwards."""

    def set_step(self, step: str, clause: str = "") -> None:
        """Label what follows with a scenario step and the spec clause it implements."""
        self.step, self.clause = step, clause
        self.steps.append((time.time(), step, clause))

    def step_at(self, timestamp: float) -> tuple[str, str]:
        """The step (and clause) that was running at wall-clock ``timestamp``."""
        current = ("", "")
        for started, step, clause in self.steps:
            if started > timestamp:
                break
            current = (step, clause)
        return current

    def record(self, source: str, destination: str, transport: str, summary: str,
               size: int = 0) -> None:
        """Add a message that no SIP tap saw (HTTPS exchanges, told by their client)."""
        self.entries.append(TraceEntry(time.monotonic() - self.started, source, destination,
                                       transport, summary, size, self.step, self.clause))

    def name_of(self, address: Address) -> str:
        return self.names.get(address.host, address.host)

    def name_of_host(self, url_or_host: str) -> str:
        """The node name for a URL's host (or a bare host)."""
        from urllib.parse import urlsplit

        host = urlsplit(url_or_host).hostname if "//" in url_or_host else url_or_host
        return self.names.get(host or "", host or url_or_host)

    def tap(self, direction: str, local: Address, remote: Address, data: bytes) -> None:
        for sink in self.sinks:
            sink(direction, local, remote, data)
        if direction != "out":
            return
        line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        if line.startswith("SIP/2.0 "):
            summary = line[8:]
            cseq = _header(data, b"CSeq")
            if cseq:
                summary += f" ({cseq.split()[-1]})"
        else:
            summary = line.rsplit(" ", 1)[0] if line else "(keep-alive)"
        self.entries.append(TraceEntry(time.monotonic() - self.started, self.name_of(local),
                                       self.name_of(remote), local.transport, summary, len(data),
                                       self.step, self.clause))

    def ladder(self, columns: list[str] | None = None, width: int = 24) -> str:
        """A text sequence chart, one arrow per message, with the time of each."""
        cols = columns or _columns(self.entries)
        index = {name: i for i, name in enumerate(cols)}
        centres = [i * width + width // 2 for i in range(len(cols))]
        total = len(cols) * width
        lines = ["".join(name.center(width) for name in cols).rstrip()]
        for entry in self.entries:
            a, b = index.get(entry.source), index.get(entry.destination)
            if a is None or b is None or a == b:
                continue
            row = [" "] * total
            for c in centres:
                row[c] = "|"
            lo, hi = sorted((centres[a], centres[b]))
            span = hi - lo - 1
            text = f" {entry.summary} [{entry.transport}] "[: span - 2]
            body = text.center(span - 1, "-")
            arrow = body + ">" if a < b else "<" + body
            row[lo + 1:hi] = list(arrow)
            clause = f"  {entry.clause}" if entry.clause else ""
            lines.append("".join(row).rstrip() + f"   {entry.at * 1000:7.1f} ms{clause}")
        return "\n".join(lines)


    def listing(self) -> str:
        """The ladder as lines grouped by scenario step: time, sender -> receiver, message."""
        width = max((len(e.source) for e in self.entries), default=8)
        lines: list[str] = []
        current = None
        for entry in self.entries:
            if (entry.step, entry.clause) != current:
                current = (entry.step, entry.clause)
                clause = f"  [{entry.clause}]" if entry.clause else ""
                lines.append(f"{entry.step or '(setup)'}{clause}")
            lines.append(f"  {entry.at * 1000:8.1f} ms  {entry.source:>{width}} -> "
                         f"{entry.destination:<22} {entry.summary} ({entry.transport})")
        return "\n".join(lines)


def _columns(entries: list[TraceEntry]) -> list[str]:
    seen: list[str] = []
    for entry in entries:
        for name in (entry.source, entry.destination):
            if name not in seen:
                seen.append(name)
    return seen


def _header(data: bytes, name: bytes) -> str | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip().decode("utf-8", "replace")
    return None
