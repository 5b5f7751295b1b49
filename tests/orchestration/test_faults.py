"""Faults a scenario injects: a node killed and started again, a link cut and restored.

What a real server keeps across a restart (registrar bindings, MC service authorisations,
refresh tokens, the replay cache, the gateway's attachments) survives a SIGKILL; with the
``amnesia`` fault it does not, and the user notices.  Judged from the wire: HTTP answers,
SIP answers and the capture.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.keystore import SystemFiles
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Network
from emulator.orchestration.driver import ScenarioDriver
from emulator.orchestration.plan import Faults
from emulator.refusal import Refusal
from emulator.sip import Address
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from emulator.topology import load_topology
from emulator.transport.tls import client_context
from nodes import journal as journal_module
from nodes.idm_client import IdmClient
from nodes.journal import MIN_COMPACTION
from nodes.journal import Journal


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


# -- the journal ---------------------------------------------------------------------------
def test_the_journal_gives_back_what_was_kept_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "state" / "node.jsonl"
    journal = Journal(path)
    assert journal.open() == {}
    journal.put("users", "sip:a@x", {"n": 1})
    journal.put("users", "sip:b@x", {"n": 2})
    journal.delete("users", "sip:a@x")
    journal.put("replay", "jti-1", 99.0)
    assert journal.tables == {"users": {"sip:b@x": {"n": 2}}, "replay": {"jti-1": 99.0}}
    nowhere = Journal(None)  # a node outside a run: nothing kept, not even in memory
    nowhere.put("users", "sip:a@x", {"n": 1})
    assert nowhere.open() == {} and nowhere.tables == {}
    # No close: a SIGKILL gives none.  Then a write torn by the kill.
    with path.open("a") as out:
        out.write('{"t":"users","k":"sip:c@x","v":{"n"')
    again = Journal(path)
    assert again.open() == {"users": {"sip:b@x": {"n": 2}}, "replay": {"jti-1": 99.0}}
    assert again.restored == 2
    journal.close()
    again.close()


def test_the_journal_reads_back_any_key_and_skips_a_damaged_row(tmp_path: Path) -> None:
    """A rewrite reads each line's table and key without decoding its value: keys that JSON
    escapes come back the same, and a row whose value is damaged is skipped, not fatal."""
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    odd = ['sip:"quoted"@x', "sip:\u00e9t\u00e9@x", "sip:a\\b@x", "sip:a,\"k\":\"b@x"]
    for n, key in enumerate(odd):
        journal.put("users", key, {"n": n})
    journal.delete("users", odd[0])
    journal.close()
    with path.open("a") as out:  # a whole line, newline and all, with a broken value
        out.write('{"t":"users","k":"sip:broken@x","v":{"n":}\n')
    again = Journal(path)
    assert again.open() == {"users": {key: {"n": n} for n, key in enumerate(odd) if n}}
    again._rewrite()  # from the file: the same rows again
    again.close()
    last = Journal(path)
    assert last.open() == {"users": {key: {"n": n} for n, key in enumerate(odd) if n}}
    last.close()


def test_the_journal_stays_bounded_by_what_is_live(tmp_path: Path) -> None:
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    for n in range(10 * MIN_COMPACTION):
        journal.put("bindings", f"sip:u{n % 3}@x", {"cseq": n})
    lines = path.read_text().splitlines()
    assert len(lines) <= MIN_COMPACTION + 3
    journal.close()
    again = Journal(path)
    assert again.open()["bindings"]["sip:u0@x"] == {"cseq": max(range(0, 10 * MIN_COMPACTION, 3))}
    again.close()


def test_a_journal_that_cannot_rewrite_goes_on_appending(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Out of descriptors (a flood) or disk: durability suffers, the node does not."""
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    real_open = Path.open

    def no_temporary(self: Path, *args: object, **kwargs: object) -> object:
        if self.suffix == ".tmp":
            raise OSError(24, "Too many open files")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", no_temporary)
    for n in range(3 * MIN_COMPACTION):
        journal.put("users", "sip:a@x", {"n": n})
    monkeypatch.undo()
    journal.close()
    again = Journal(path)
    assert again.open()["users"]["sip:a@x"] == {"n": 3 * MIN_COMPACTION - 1}
    again.close()


def test_a_short_write_leaves_no_torn_line(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """write(2) may take part of a line (a signal, a disk filling up): the journal writes
    the rest, so every line comes back whole and the next line starts on its own."""
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    journal.put("users", "sip:a@x", {"services": {"mcptt": "sip:a@x"}, "n": 1})
    journal.put("users", "sip:b@x", {"n": 2})
    journal.delete("users", "sip:a@x")
    monkeypatch.undo()
    journal.close()
    again = Journal(path)
    assert again.open() == {"users": {"sip:b@x": {"n": 2}}}
    again.close()


async def test_a_serving_journal_rewrites_a_step_per_turn_and_reads_back_whole_at_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a running loop the rewrite reads the file back in steps, so a node serves
    between them; what it appends meanwhile is kept, and the file on disk, read as a
    restart would at any moment, holds every live row."""
    monkeypatch.setattr(journal_module, "REWRITE_STEP", 512)
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    expected: dict[str, dict[str, int]] = {}
    for n in range(MIN_COMPACTION):  # up to the threshold, not past it
        key = f"sip:u{n % 40}@x"
        journal.put("bindings", key, {"cseq": n})
        expected[key] = {"cseq": n}
    grown = path.stat().st_size
    journal.put("bindings", "sip:u0@x", {"cseq": -1})  # past it: the rewrite begins
    expected["sip:u0@x"] = {"cseq": -1}
    assert path.stat().st_size > grown  # appended; nothing read back within the put
    turns = 0
    while path.stat().st_size > grown // 4:  # until the file has only the live rows
        await asyncio.sleep(0)
        turns += 1
        assert turns < 1000, "the rewrite never ended"
        key = f"sip:new{turns}@x"
        journal.put("bindings", key, {"cseq": turns})  # served meanwhile
        expected[key] = {"cseq": turns}
        journal.delete("bindings", "sip:u1@x")
        expected.pop("sip:u1@x", None)
        assert Journal(path).tables == {"bindings": expected}  # a restart now: all of it
    assert turns > grown // 512 // 2  # in steps, not at once
    assert not path.with_suffix(".tmp").exists()
    journal.close()
    again = Journal(path)
    assert again.open() == {"bindings": expected}
    again.close()


async def test_a_journal_closed_within_a_rewrite_keeps_its_file_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "REWRITE_STEP", 256)
    path = tmp_path / "node.jsonl"
    journal = Journal(path)
    journal.open()
    for n in range(MIN_COMPACTION + 1):
        journal.put("users", f"sip:u{n % 7}@x", {"n": n})
    await asyncio.sleep(0)  # a step or two read, far from done
    descriptors = len(os.listdir("/proc/self/fd"))
    journal.close()
    assert len(os.listdir("/proc/self/fd")) == descriptors - 2  # its file and the reader's
    for _ in range(5):
        await asyncio.sleep(0)  # no step runs after close
    again = Journal(path)
    assert again.open() == {"users": {f"sip:u{n % 7}@x": {"n": n}
                                      for n in range(MIN_COMPACTION + 1 - 7, MIN_COMPACTION + 1)}}
    again.close()


def test_a_node_outside_a_run_keeps_nothing() -> None:
    journal = Journal(None)
    journal.open()
    journal.put("users", "x", 1)  # nowhere to write: no error either
    assert journal.restored == 0


# -- nodes killed and started again ----------------------------------------------------------
@pytest.mark.parametrize("amnesia", [False, True], ids=["kept", "amnesia"])
async def test_refresh_tokens_and_replay_cache_survive_an_idms_kill(
        topology: Topology, tmp_path: Path, amnesia: bool) -> None:
    faults = Faults(amnesia=amnesia)
    async with Network(topology, faults, run_dir=tmp_path / "run", placement="proc") as net:
        primary, partner = topology.system("primary"), topology.system("partner")
        ca = SystemFiles(net.run_dir / "pki", "primary").ca_certificate.read_bytes()
        client = IdmClient(topology.oidc_client_id, topology.oidc_redirect_uri,
                           client_context([ca]))
        async with client:
            tokens = await client.login(primary.issuer, "alice", "alice-secret")
        ue = net.ues["ue-alice"]
        await ue.login(primary.issuer)
        await ue.request_security_token(f"{primary.issuer}/token", partner.issuer)
        await ue.request_partner_token(f"{partner.issuer}/token")
        for name in ("primary.idms", "partner.idms"):
            pid = net.runner.nodes[name].state()["pid"]
            await net.kill(name)
            await net.revive(name)
            assert net.runner.nodes[name].state()["pid"] != pid
        async with client:
            form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
                    "client_id": topology.oidc_client_id}
            if amnesia:
                with pytest.raises(Refusal, match="refresh token unknown"):
                    await client.token(f"{primary.issuer}/token", form)
            else:
                refreshed = await client.token(f"{primary.issuer}/token", form)
                assert refreshed["access_token"] and refreshed["refresh_token"]
        if amnesia:  # forgotten: the same security token is taken a second time
            await ue.request_partner_token(f"{partner.issuer}/token")
        else:
            with pytest.raises(Refusal, match="replay"):
                await ue.request_partner_token(f"{partner.issuer}/token")


async def test_a_killed_gateway_keeps_its_attachments_and_the_user_goes_on(
        topology: Topology, tmp_path: Path) -> None:
    async with Network(topology, run_dir=tmp_path / "run", placement="proc") as net:
        driver = ScenarioDriver(net, SCENARIOS["default"])
        assert (await driver.run()).passed
        gateway = topology.local_plmn.gateway.qualified_name
        attached = (await net.refresh())[gateway]["attached"]
        assert attached == {"127.0.31.1": "ue-alice"}
        await net.kill(gateway)
        await net.revive(gateway)
        assert net.runner.nodes[gateway].state()["attached"] == attached
        assert net.runner.nodes[gateway].state()["restored"] == 1
        net.steps.begin("after-gateway-restart")
        assert "delivered" in await driver.short_data()
    assert net.capture_file is not None
    after = [m for m in extract(net.capture_file) if m.step == "after-gateway-restart"]
    assert ("visited-plmn.gateway", "ue-alice", "200 (MESSAGE)") in \
        {(m.source, m.destination, m.label) for m in after}
    assert not any(m.label.startswith("REGISTER") for m in after)
    kept = (net.run_dir / "state" / f"{gateway}.jsonl").read_text().splitlines()
    assert json.loads(kept[-1])["v"]["registered"] is True


async def test_kill_refuses_what_is_not_running_and_start_what_is_not_down(
        topology: Topology, tmp_path: Path) -> None:
    async with Network(topology, run_dir=tmp_path / "run") as net:
        with pytest.raises(KeyError, match="no running node 'nobody'"):
            await net.kill("nobody")
        with pytest.raises(KeyError, match=r"no node 'partner\.cms' is down"):
            await net.revive("partner.cms")
        await net.kill("partner.cms")
        assert "partner.cms" not in net.runner.nodes
        await net.revive("partner.cms")
        assert "partner.cms" in net.runner.nodes


# -- links cut and restored -------------------------------------------------------------------
async def test_a_cut_link_drops_everything_until_restored(topology: Topology,
                                                          tmp_path: Path) -> None:
    async with Network(topology, run_dir=tmp_path / "run") as net:
        partner = topology.system("partner")
        carol, core = partner.user("carol"), partner.node("sip-core")
        ue = net.ues["ue-carol"]
        tokens = await ue.login(partner.issuer)
        await net.cut("ue-carol", "partner.sip-core")
        net.steps.begin("cut")
        registering = ue.register(Address("udp", core.host, 5060), partner.domain,
                                  carol.mcptt_id, carol.mcptt_id.removeprefix("sip:"),
                                  tokens.access_token, carol.mc_ids)
        task = asyncio.ensure_future(registering)
        impairer = ue.sip.endpoint.impairer
        while impairer.dropped < 2:  # the REGISTER and a retransmission (Timer E)
            await asyncio.wait([task], timeout=0.1)
            assert not task.done()
        net.steps.begin("restored")
        await net.restore("ue-carol", "partner.sip-core")
        assert (await task).status == 200
        with pytest.raises(KeyError, match=r"no link ue-carol - partner\.idms"):
            await net.cut("ue-carol", "partner.idms")
    assert net.capture_file is not None
    steps = {m.step for m in extract(net.capture_file)
             if m.source == "ue-carol" and m.label == "REGISTER"}
    assert steps == {"restored"}  # dropped packets never reached the wire


async def test_only_a_datagram_link_can_be_cut(topology: Topology, tmp_path: Path) -> None:
    net = Network(topology, transport="tcp", run_dir=tmp_path / "run")  # refused unstarted
    with pytest.raises(ValueError, match="is TCP: only a datagram link"):
        await net.cut("ue-carol", "partner.sip-core")
