"""The control socket of a running ``up``: what outside commands change at run time.

``up`` listens on a Unix socket (the state file's ``control``) for one JSON request per
connection and answers with one JSON line::

    {"link": ["ue-alice", "visited-plmn.gateway"],
     "from_a": {"loss": "20%", "delay": "50ms"}, "from_b": {...}}   -> {"ok": "..."}

``from_a`` is what ``a`` sends, ``from_b`` what ``b`` sends: a mapping as in the topology
file's ``impair:``, or ``{}`` for a link that does nothing, or absent to leave that way
as it is.

    {"radio_attach": "ue-alice"}                                      -> {"ok": "198.18.31.1"}

is what the radio does before a UE attaches to the local PLMN (netns placement: its
namespace moves from the home access network to the PLMN's; see
:meth:`.network.Network.radio_attach`); ``ok`` is the UE's new address, or ``""`` in a
placement without namespaces.  An outside client in the UE's namespace asks for it.

A bad request gets ``{"error": "..."}``; nothing a client sends stops ``up``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from emulator.refusal import Refusal
from emulator.topology import ImpairmentError
from emulator.topology import parse_impairment

from .network import Network

MAX_REQUEST = 64 * 1024


async def apply(network: Network, request: dict[str, Any]) -> str:
    """Carry out one request; raises ValueError (or KeyError) naming what is wrong."""
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    if "radio_attach" in request:
        ue = request["radio_attach"]
        if not isinstance(ue, str) or ue not in network.ues:
            raise KeyError(f"no UE {ue!r}")
        return await network.radio_attach(ue) or ""
    return await _link(network, request)


async def _link(network: Network, request: dict[str, Any]) -> str:
    ends = request.get("link")
    if not (isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, str) for e in ends)):
        raise ValueError("'link' must name the two ends of a link")
    transport = network.topology.link_transport(ends[0], ends[1]) or "udp"
    changed = []
    for key, sender, peer in (("from_a", ends[0], ends[1]), ("from_b", ends[1], ends[0])):
        if key not in request:
            continue
        values = request[key]
        if not isinstance(values, dict):
            raise ValueError(f"{key!r} must be a mapping")
        impairment = parse_impairment(values, transport=transport) if values else None
        await network.impair(sender, peer, impairment)
        changed.append(sender)
    return f"link {ends[0]} - {ends[1]}: changed what {' and '.join(changed) or 'nobody'} sends"


@asynccontextmanager
async def control_socket(network: Network) -> AsyncIterator[str]:
    """Serve control requests for ``network``; yields the socket's path."""
    directory = tempfile.mkdtemp(prefix=f"{network.prefix}up-")  # `clean` goes by it
    path = os.path.join(directory, "control")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                if len(line) > MAX_REQUEST:
                    raise ValueError("request too large")
                reply: dict[str, str] = {"ok": await apply(network, json.loads(line))}
            except (ValueError, KeyError, ImpairmentError, Refusal) as exc:
                reply = {"error": str(exc)}
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(answer, path, limit=MAX_REQUEST + 2)
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()
        os.unlink(path)
        os.rmdir(directory)


async def send(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """One request to a running ``up``; returns its answer."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        answer: dict[str, Any] = json.loads(await reader.readline())
        return answer
    finally:
        writer.close()
