"""Turn a run's raw capture into the files a Wireshark user opens.

From the kernel capture (or the application-level tap's frames) this writes:

* ``capture.pcapng``: every packet of the run, time-ordered, with the node
  names (Name Resolution Block), the TLS secrets (Decryption Secrets Block,
  so HTTPS opens decrypted with no set-up) and, on each packet, a comment
  naming the scenario step running when it was sent and the step's clause;
* ``nodes/<node>.pcapng``: the same, restricted to what one node sent and
  received;
* ``tls-keys.log`` stays beside them for tools that want the plain key log.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path

from .pcapng import Packet
from .pcapng import client_random
from .pcapng import ipv4_endpoints
from .pcapng import keylog_by_session
from .pcapng import write_pcapng

StepLabel = Callable[[float], tuple[str, str]]


def annotate(packets: Iterable[Packet], label: StepLabel) -> list[Packet]:
    """Comment each packet with ``step | clause`` of the step running at its timestamp."""
    out = []
    for packet in packets:
        step, clause = label(packet.timestamp)
        comment = f"{step} | {clause}" if clause else step or None
        out.append(Packet(packet.timestamp, packet.data, comment, packet.original_length))
    return out


def publish(run_dir: Path, packets: list[Packet], *, names: Mapping[str, str],
            label: StepLabel, keylog: Path | None, method: str,
            nodes: Collection[str] = (), most_others: int | None = None) -> list[Path]:
    """Write the merged and per-node pcapng files; returns their paths (merged first).

    One pass over the packets, whatever the number of names (a load run names 10,000
    UEs and a /16 pool).  Each file's Name Resolution Block holds only the addresses
    its packets use, and a node's file only the TLS secrets of its own sessions (a load
    run's key log is ~100 MB).  Each of ``nodes`` that the capture names gets a file of its
    own; so does each other name (a UE, a pool address) unless the capture names more
    than ``most_others`` of them (None: no limit).
    """
    annotated = annotate(packets, label)
    secrets = keylog.read_bytes() if keylog is not None and keylog.exists() else None
    comment = f"MCX migration emulator run {run_dir.name}; capture method: {method}"
    by_node: dict[str, list[Packet]] = {}
    seen: dict[str, set[str]] = {}
    """Per node: the addresses its packets use (its own and its peers')."""
    sessions: dict[str, set[bytes]] = {}
    """Per node: the client randoms of its TLS sessions (its file's secrets)."""
    for packet in annotated:
        endpoints = ipv4_endpoints(packet.data)
        if endpoints is None:
            continue
        random = client_random(packet.data) if secrets else None
        for name in {names.get(endpoints[0]), names.get(endpoints[1])}:
            if name is not None:
                by_node.setdefault(name, []).append(packet)
                seen.setdefault(name, set()).update(endpoints)
                if random is not None:
                    sessions.setdefault(name, set()).add(random)
    used = set().union(*seen.values()) if seen else set()
    merged = run_dir / "capture.pcapng"
    write_pcapng(merged, annotated, names=_restricted(names, used), tls_keylog=secrets,
                 comment=comment, description=method)
    written = [merged]
    node_dir = run_dir / "nodes"
    node_dir.mkdir(exist_ok=True)
    others = [name for name in by_node if name not in nodes]
    crowd = most_others is not None and len(others) > most_others
    by_session = keylog_by_session(secrets) if secrets else {}
    for name, mine in sorted(by_node.items()):
        if crowd and name not in nodes:
            continue
        path = node_dir / f"{name}.pcapng"
        own = b"".join(line for random in sorted(sessions.get(name, ()))
                       for line in by_session.get(random, ())) or None
        write_pcapng(path, mine, names=_restricted(names, seen[name]), tls_keylog=own,
                     comment=f"{comment}; packets sent or received by {name}",
                     description=method)
        written.append(path)
    return written


def _restricted(names: Mapping[str, str], hosts: set[str]) -> dict[str, str]:
    return {host: name for host, name in names.items() if host in hosts}
