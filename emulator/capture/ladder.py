"""Message sequence charts built from a capture file, not from in-memory state.

:func:`extract` asks tshark for every SIP and HTTP message of a capture
(HTTPS decrypted with the secrets embedded in the pcapng, or a key log),
with the node names of its name-resolution records and the per-packet
comments that name the scenario step and its clause.  The renderers turn
that list into a terminal chart, Mermaid text, SVG, or a self-contained
HTML page.  Columns are nodes, grouped by MC system.
"""

from __future__ import annotations

import html
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .tshark import tshark_command

_FIELDS = ("frame.time_relative", "frame.protocols", "ip.src", "ip.dst", "ip.src_host",
           "ip.dst_host",
           "sip.Method", "sip.Status-Code", "sip.CSeq.method", "http.request.method",
           "http.request.uri", "http.response.code", "urlencoded-form.key",
           "urlencoded-form.value", "frame.comment", "tcp.dstport", "udp.dstport")
_GRANTS = {"authorization_code": "authorization_code", "refresh_token": "refresh_token",
           "urn:ietf:params:oauth:grant-type:token-exchange": "token-exchange",
           "urn:ietf:params:oauth:grant-type:jwt-bearer": "jwt-bearer"}


class LadderError(RuntimeError):
    """tshark is missing or could not read the capture."""


@dataclass(frozen=True)
class LadderMessage:
    time: float
    source: str
    destination: str
    protocol: str  # "SIP" or "HTTP"
    label: str
    step: str = ""
    clause: str = ""
    transport: str = ""
    """udp, tcp or tls: what carried it.  Not part of a golden-trace signature."""


def _first(value: str) -> str:
    return value.split(",", 1)[0] if value else ""


def extract(capture: Path, *, keylog: Path | None = None,
            names: Mapping[str, str] | None = None) -> list[LadderMessage]:
    """Every SIP and HTTP message of ``capture``, in capture order."""
    try:
        command = tshark_command(capture, "-N", "n", "-Y", "sip || http", "-T", "fields",
                                 "-E", "separator=\t", "-E", "occurrence=a",
                                 "-E", "aggregator=\x1f")
    except FileNotFoundError as exc:
        raise LadderError(str(exc)) from None
    if keylog is not None:
        command += ["-o", f"tls.keylog_file:{keylog}"]
    for name in _FIELDS:
        command += ["-e", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise LadderError(f"tshark could not read {capture}: {done.stderr.strip()[:300]}")
    names = dict(names or {})
    messages = []
    for line in done.stdout.splitlines():
        cells = line.split("\t")
        if len(cells) < len(_FIELDS):
            cells += [""] * (len(_FIELDS) - len(cells))
        row = dict(zip(_FIELDS, cells, strict=True))
        source = names.get(row["ip.src"]) or _resolved(row["ip.src_host"], row["ip.src"])
        destination = names.get(row["ip.dst"]) or _resolved(row["ip.dst_host"], row["ip.dst"])
        step, _, clause = row["frame.comment"].split("\x1f")[0].partition(" | ")
        layers = row["frame.protocols"].split(":")
        transport = "tls" if "tls" in layers else "tcp" if "tcp" in layers else "udp"
        for protocol, label in _labels(row):
            messages.append(LadderMessage(float(row["frame.time_relative"] or 0), source,
                                          destination, protocol, label, step, clause,
                                          transport))
    return messages


def _resolved(host: str, address: str) -> str:
    host = host.split("\x1f")[0]
    return host if host and host != address else address


def _labels(row: Mapping[str, str]) -> list[tuple[str, str]]:
    """One label per message in the frame (SIP over TCP may pack several)."""
    out = []
    methods = [m for m in row["sip.Method"].split("\x1f") if m]
    statuses = [s for s in row["sip.Status-Code"].split("\x1f") if s]
    cseqs = [c for c in row["sip.CSeq.method"].split("\x1f") if c]
    if methods or statuses:
        # A REGISTER carrying the UE's REGISTER as message/sip shows two methods:
        # the outer one is the message on the wire.
        if methods:
            out.append(("SIP", _first(methods[0])))
        else:
            out.append(("SIP", f"{_first(statuses[0])} ({_first(cseqs[0]) if cseqs else '?'})"))
    method = row["http.request.method"].split("\x1f")[0]
    if method:
        path = row["http.request.uri"].split("\x1f")[0].split("?", 1)[0]
        label = f"{method} {path}"
        keys = row["urlencoded-form.key"].split("\x1f")
        values = row["urlencoded-form.value"].split("\x1f")
        form = dict(zip(keys, values, strict=False))
        if "grant_type" in form:
            label += f" ({_GRANTS.get(form['grant_type'], form['grant_type'])})"
        out.append(("HTTP", label))
    status = row["http.response.code"].split("\x1f")[0]
    if status:
        out.append(("HTTP", f"HTTP {status}"))
    return out


def group_of(name: str) -> str:
    """The MC system (or PLMN) a node belongs to, from its qualified name."""
    if name.replace(".", "").isdigit():
        return "unnamed hosts"
    return name.split(".", 1)[0] if "." in name else "UEs"


def columns(messages: Sequence[LadderMessage]) -> list[str]:
    """Node columns grouped by system, in the order the story reads.

    The UE that talks to the most systems (the migrating one) comes first,
    then the systems in the order it reached them (primary, local PLMN,
    partner), then anything else in order of appearance.
    """
    seen: list[str] = []
    reached: dict[str, list[str]] = {}
    for message in messages:
        for name in (message.source, message.destination):
            if name not in seen:
                seen.append(name)
        for ue, peer in ((message.source, message.destination),
                         (message.destination, message.source)):
            if group_of(ue) == "UEs" and group_of(peer) not in reached.setdefault(ue, []):
                reached[ue].append(group_of(peer))
    ues = sorted((n for n in seen if group_of(n) == "UEs"),
                 key=lambda n: (-len(reached.get(n, [])), seen.index(n)))
    order: list[str] = ["UEs"]
    for ue in ues:
        order += [g for g in reached.get(ue, []) if g not in order]
    order += [group_of(n) for n in seen if group_of(n) not in order]
    order = list(dict.fromkeys(order))
    rank = {group: i for i, group in enumerate(order)}
    ue_rank = {ue: i for i, ue in enumerate(ues)}
    return sorted(seen, key=lambda n: (rank[group_of(n)], ue_rank.get(n, 0), seen.index(n)))


def render_text(messages: Sequence[LadderMessage], width: int = 18) -> str:
    cols = columns(messages)
    index = {name: i for i, name in enumerate(cols)}
    centres = [i * width + width // 2 for i in range(len(cols))]
    total = len(cols) * width
    groups: list[tuple[str, int]] = []
    for name in cols:
        if groups and groups[-1][0] == group_of(name):
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((group_of(name), 1))
    lines = ["".join(g.center(n * width, "=")[: n * width] for g, n in groups),
             "".join(n.split(".", 1)[-1][: width - 1].center(width) for n in cols).rstrip()]
    step = None
    for message in messages:
        if message.step != step:
            step = message.step
            lines.append(f"-- {step or '(no step)'}  [{message.clause}]" if message.clause
                         else f"-- {step or '(no step)'}")
        a, b = index[message.source], index[message.destination]
        row = [" "] * total
        for c in centres:
            row[c] = "|"
        if a != b:
            lo, hi = sorted((centres[a], centres[b]))
            span = hi - lo - 1
            text = f" {message.label} "[: max(span - 2, 0)]
            body = text.center(span - 1, "-")
            row[lo + 1:hi] = list(body + ">" if a < b else "<" + body)
        lines.append("".join(row).rstrip() + f"  {message.time * 1000:7.1f} ms")
    return "\n".join(lines)


def _mermaid_id(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def render_mermaid(messages: Sequence[LadderMessage]) -> str:
    lines = ["sequenceDiagram"]
    current_group = None
    for name in columns(messages):
        group = group_of(name)
        if group != current_group:
            if current_group is not None:
                lines.append("    end")
            lines.append(f"    box {group}")
            current_group = group
        lines.append(f"    participant {_mermaid_id(name)} as {name}")
    if current_group is not None:
        lines.append("    end")
    step = None
    for message in messages:
        if message.step != step:
            step = message.step
            note = f"{step} [{message.clause}]" if message.clause else (step or "setup")
            lines.append(f"    Note over {_mermaid_id(columns(messages)[0])}: "
                         f"{note.replace(';', ',')}")
        lines.append(f"    {_mermaid_id(message.source)}->>{_mermaid_id(message.destination)}: "
                     f"{message.label.replace(';', ',')}")
    return "\n".join(lines) + "\n"


def render_svg(messages: Sequence[LadderMessage], *, column: int = 150, row: int = 22) -> str:
    cols = columns(messages)
    steps = sum(1 for i, m in enumerate(messages) if i == 0 or m.step != messages[i - 1].step)
    height = 90 + (len(messages) + steps) * row + 20
    width = len(cols) * column + 260
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="3" '
             'orient="auto"><path d="M0,0 L7,3 L0,6 z"/></marker></defs>']
    x = {name: 20 + i * column + column // 2 for i, name in enumerate(cols)}
    start = 0
    for i, name in enumerate([*cols, ""]):
        if i == len(cols) or (i > 0 and group_of(name) != group_of(cols[i - 1])):
            group = group_of(cols[start])
            left = 20 + start * column + 4
            parts.append(f'<rect x="{left}" y="6" width="{(i - start) * column - 8}" '
                         f'height="20" fill="#e8eef7" stroke="#6b8cc7"/>')
            parts.append(f'<text x="{left + (i - start) * column // 2 - 4}" y="20" '
                         f'text-anchor="middle" font-weight="bold">{html.escape(group)}</text>')
            start = i
    for name in cols:
        parts.append(f'<text x="{x[name]}" y="44" text-anchor="middle">{html.escape(name)}'
                     f'</text>')
        parts.append(f'<line x1="{x[name]}" y1="50" x2="{x[name]}" y2="{height - 10}" '
                     f'stroke="#999" stroke-dasharray="4,3"/>')
    y = 70
    step = None
    for message in messages:
        if message.step != step:
            step = message.step
            label = f"{step} [{message.clause}]" if message.clause else (step or "(setup)")
            parts.append(f'<text x="20" y="{y}" font-style="italic" fill="#2a5">'
                         f'{html.escape(label)}</text>')
            y += row
        a, b = x[message.source], x[message.destination]
        colour = "#b22" if message.label.startswith(("4", "5", "6", "HTTP 4", "HTTP 5")) \
            else "#123"
        parts.append(f'<line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="{colour}" '
                     f'marker-end="url(#arrow)"/>')
        parts.append(f'<text x="{(a + b) / 2}" y="{y - 4}" text-anchor="middle" '
                     f'fill="{colour}">{html.escape(message.label)}</text>')
        y += row
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_html(messages: Sequence[LadderMessage], title: str = "MCX ladder") -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title></head>\n<body><h1>{html.escape(title)}</h1>\n{render_svg(messages)}'
            f"</body></html>\n")


RENDERERS = {"text": render_text, "mermaid": render_mermaid, "svg": render_svg,
             "html": render_html}
