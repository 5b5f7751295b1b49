"""More than two UEs at once: four generated users migrate into the partner system, then
all of them use MC services there at the same time, judged from the capture, not from the
nodes' memory.

Each migrated UE sends an SDS to the partner-local user carol and calls the next migrated
UE in a ring (1 -> 2 -> 3 -> 4 -> 1), while carol calls one of them.  The partner MC
server is a proxy for them (one Call-ID end to end), so each call and message is followed
in the capture by its Call-ID: from the caller's address, through the MC server (which
names the called party in the Request-URI), to the callee's address and back.

Hosts: the gateway 127.0.30.1, the partner SIP core 127.0.20.2, the partner MC server
127.0.20.3, ue-carol 127.0.41.1; generated UEs attach from 127.65.0.0/16
(emulator/topology/population.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from emulator.capture.analysis import crossings
from emulator.capture.analysis import flows
from emulator.orchestration.load import LoadGenerator
from emulator.orchestration.load import LoadOptions
from emulator.orchestration.network import Network
from emulator.sip.events import Address
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import load_topology
from emulator.topology.population import populate
from nodes import UserEquipment
from nodes import mc_service_psi
from nodes import mcptt_server_psi
from tests.support.wire import sip_fields

KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
pytestmark = [pytest.mark.skipif(not KERNEL or shutil.which("tshark") is None,
                                 reason="needs root, tcpdump and tshark"),
              pytest.mark.timeout(60)]
UES = 4
CAROL = "ue-carol"
CAROL_CALLS = 2
"""The migrated UE (1-based) carol calls, while its ring neighbour calls it too."""
FIELDS = ("ip.src", "ip.dst", "sip.Method", "sip.Status-Code", "sip.CSeq.method",
          "sip.Call-ID", "sip.from.user", "sip.pai.user", "sip.r-uri.user", "xml.cdata",
          "media.type")


class Sip(NamedTuple):
    """One SIP message of the capture (its outer message's fields)."""

    source: str
    destination: str
    method: str
    """'' for a response."""
    status: str
    cseq: str
    """The CSeq method: what a response answers."""
    call_id: str
    from_user: str
    asserted: str
    """The P-Asserted-Identity's user part ('' when there is none)."""
    target: str
    """The Request-URI's user part."""
    info: frozenset[str]
    """The texts of the XML bodies (mcptt-info, mcdata-info)."""
    binary: tuple[bytes, ...]
    """The body parts tshark leaves undissected (MCData signalling and payload)."""


def read_sip(capture: Path) -> list[Sip]:
    """Every SIP message of the capture: one tshark run."""
    rows = sip_fields(capture, "sip", *FIELDS)
    return [Sip(*(value.split(",")[0] for value in r[:-2]),
                frozenset(filter(None, r[-2].split(","))),
                tuple(bytes.fromhex(part.replace(":", "")) for part in r[-1].split(",")
                      if part)) for r in rows]


class Party(NamedTuple):
    ue: str
    uri: str
    """The identity it registered in the partner system."""
    address: str
    """Where it sends and receives SIP (a migrated UE: its address in the local PLMN)."""
    data_id: str
    """Its MCData ID in the partner system."""

    @property
    def user(self) -> str:
        return self.uri.removeprefix("sip:").partition("@")[0]


async def register_carol(net: Network, carol: UserEquipment) -> Party:
    """carol, a partner-local user, logs in and registers at her own SIP core."""
    spec = net.topology.ue(CAROL)
    partner = net.topology.system(spec.home)
    user = partner.user(spec.user)
    core = partner.node("sip-core")
    assert core.sip is not None and user.mcdata_id is not None
    transport = net.topology.link_transport(CAROL, core.qualified_name) or "udp"
    token = (await carol.login(partner.issuer)).access_token
    outcome = await carol.register(Address(transport, core.host, core.sip.port_for(transport)),
                                   partner.domain, user.mcptt_id,
                                   user.mcptt_id.removeprefix("sip:"), token, user.mc_ids)
    assert outcome.status == 200, outcome
    return Party(CAROL, user.mcptt_id, spec.host, user.mcdata_id)


def delivered(sip: list[Sip], method: str, caller: Party, callee: Party,
              mc_server: str) -> set[str]:
    """The Call-IDs of the ``method`` requests that left ``caller``'s address as its
    identity, left the MC server for ``callee``'s identity, and reached ``callee``'s address
    asserting ``caller``'s identity."""
    sent = {m.call_id for m in sip if m.method == method and m.source == caller.address
            and m.from_user == caller.user}
    routed = {m.call_id for m in sip if m.method == method and m.source == mc_server
              and m.target == callee.user}
    return {m.call_id for m in sip if m.method == method and m.destination == callee.address
            and m.from_user == caller.user and m.asserted == caller.user} & sent & routed


def answers(sip: list[Sip], call_id: str, method: str, *, source: str = "",
            destination: str = "") -> set[str]:
    """The statuses answering ``method`` of ``call_id`` (from ``source``, to
    ``destination``, when given)."""
    return {m.status for m in sip if m.call_id == call_id and m.cseq == method and m.status
            and m.source == (source or m.source)
            and m.destination == (destination or m.destination)}


def judge_call(sip: list[Sip], caller: Party, callee: Party, mc_server: str,
               addresses: set[str]) -> None:
    """One private call, INVITE to BYE, from the capture."""
    call = (caller.ue, callee.ue)
    invites = delivered(sip, "INVITE", caller, callee, mc_server)
    assert len(invites) == 1, (call, invites)
    call_id = invites.pop()
    # To the right callee only, naming both parties in mcptt-info.
    reached = {m.destination for m in sip if m.method == "INVITE" and m.call_id == call_id}
    assert reached & addresses == {callee.address}, (call, reached)
    assert {"private", caller.uri, callee.uri} <= next(
        m.info for m in sip if m.method == "INVITE" and m.call_id == call_id and
        m.destination == callee.address), call
    # The callee answered 200, from its own address; the 200 reached the caller, which
    # acknowledged it to the callee; no other final answer anywhere on the way.
    assert "200" in answers(sip, call_id, "INVITE", source=callee.address), call
    assert "200" in answers(sip, call_id, "INVITE", destination=caller.address), call
    assert answers(sip, call_id, "INVITE") <= {"100", "200"}, call
    assert any(m.method == "ACK" and m.call_id == call_id and
               m.destination == callee.address for m in sip), call
    # The caller hung up: its BYE reached the callee, whose 200 came back to it.
    assert any(m.method == "BYE" and m.call_id == call_id and m.source == caller.address
               for m in sip), call
    assert any(m.method == "BYE" and m.call_id == call_id and
               m.destination == callee.address for m in sip), call
    assert "200" in answers(sip, call_id, "BYE", source=callee.address), call
    assert "200" in answers(sip, call_id, "BYE", destination=caller.address), call
    assert answers(sip, call_id, "BYE") == {"200"}, call


def judge_sds(sip: list[Sip], sender: Party, carol: Party, mc_server: str) -> None:
    """One SDS, sender to carol, from the capture: her 200 back to the sender, the MCData
    IDs in mcdata-info, the text in the data payload."""
    messages = delivered(sip, "MESSAGE", sender, carol, mc_server)
    assert len(messages) == 1, (sender.ue, messages)
    call_id = messages.pop()
    at_carol = next(m for m in sip if m.method == "MESSAGE" and m.call_id == call_id and
                    m.destination == carol.address)
    assert at_carol.info == {carol.data_id, sender.data_id}, sender
    assert any(sds_text(sender.ue).encode() in part for part in at_carol.binary), sender
    assert answers(sip, call_id, "MESSAGE", source=carol.address) == {"200"}, sender
    assert answers(sip, call_id, "MESSAGE", destination=sender.address) == {"200"}, sender
    assert answers(sip, call_id, "MESSAGE") == {"200"}, sender


def sds_text(ue: str) -> str:
    return f"SDS from {ue}"


async def test_four_migrated_ues_call_and_message_at_the_same_time(tmp_path: Path) -> None:
    population = populate(load_topology(DEFAULT_TOPOLOGY), UES)
    net = Network(population.topology, run_dir=tmp_path / "run", placement="inproc",
                  capture=True, crowd=population.ues)
    topology = net.topology
    partner = topology.system(topology.local_plmn.serves)
    primary = topology.system(population.template.home)
    mcptt_psi = mcptt_server_psi(partner.domain)
    mcdata_psi = mc_service_psi("mcdata", partner.domain)
    async with net:
        await net.wait_ready()
        carol_ue: UserEquipment = net.ues[CAROL]
        carol = await register_carol(net, carol_ue)
        async with LoadGenerator(net, population, LoadOptions(UES, rate=1000)) as generator:
            result = await generator.run()
            assert result.registered == UES, result.failures
            migrated = []
            for ue in generator.ues:
                profile = partner.migration_profile(generator.specs[ue.name].user,
                                                    primary.name)
                assert profile is not None and profile.partner_mcdata_id is not None
                assert ue.visited_address is not None
                migrated.append(Party(ue.name, generator.access[ue.name].partner_impu,
                                      ue.visited_address, profile.partner_mcdata_id))
            # All at once: every SDS, the ring of private calls, and carol's call.
            outcomes = await asyncio.gather(
                *(ue.send_short_data(carol.data_id, sds_text(ue.name), visited=True,
                                     psi=mcdata_psi, mcdata_id=party.data_id)
                  for ue, party in zip(generator.ues, migrated, strict=True)),
                *(ue.private_call(migrated[(i + 1) % UES].uri, visited=True, psi=mcptt_psi)
                  for i, ue in enumerate(generator.ues)),
                carol_ue.private_call(migrated[CAROL_CALLS - 1].uri, psi=mcptt_psi))
    # What the UEs were told (the capture below says what really crossed the network).
    assert [o.status for o in outcomes[:UES]] == [200] * UES, outcomes[:UES]
    assert all(c.invite_status == 200 and c.bye_status == 200 for c in outcomes[UES:]), \
        outcomes[UES:]

    capture = net.capture_file
    assert capture is not None and capture.exists()
    sip = read_sip(capture)
    mc_server = partner.node("mc-server").host
    addresses = {party.address for party in (*migrated, carol)}
    calls = [(migrated[i], migrated[(i + 1) % UES]) for i in range(UES)]
    calls.append((carol, migrated[CAROL_CALLS - 1]))
    # At the same time: every call and message had left its sender before any call ended.
    started = [(i, m.call_id) for i, m in enumerate(sip)
               if m.method in ("INVITE", "MESSAGE") and m.source in addresses]
    assert len({call_id for _, call_id in started}) == len(calls) + UES, started
    assert max(i for i, _ in started) < next(i for i, m in enumerate(sip) if m.method == "BYE")
    for caller, callee in calls:
        judge_call(sip, caller, callee, mc_server, addresses)
    for sender in migrated:
        judge_sds(sip, sender, carol, mc_server)
    # carol received one SDS from each of the four, by their partner identities.
    at_carol = [(m.from_user, m.call_id) for m in sip
                if m.method == "MESSAGE" and m.destination == carol.address]
    assert {user for user, _ in at_carol} == {f"alice-{i:05d}.visitor"
                                              for i in range(1, UES + 1)}
    assert len({call_id for _, call_id in at_carol}) == UES

    # In two calls at once, the UE answers each with an SDP session of its own: its own
    # origin (RFC 4566 §5.2) and its own media ports.
    both = migrated[CAROL_CALLS - 1].address
    answered = sip_fields(capture, f'sip.Status-Code == 200 && sip.CSeq.method == "INVITE" '
                          f"&& ip.src == {both} && sdp", "sdp.owner.sessionid",
                          "sdp.media.port")
    assert len({row[0] for row in answered}) == 2, answered
    assert len({row[1] for row in answered}) == 2, answered

    # No packet between the primary and the partner systems (the driver's capture
    # verdict), in a capture that holds both: the users logged in at home, then worked
    # in the partner.
    found = crossings(capture, primary.hosts, partner.hosts)
    assert not found, found[:5]
    seen = {address for flow in flows(capture) for address in (flow.source, flow.destination)}
    assert seen & primary.hosts and seen & partner.hosts
