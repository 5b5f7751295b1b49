"""The topology loader: frozen data on success, errors naming file, line and key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emulator.orchestration.plan import plan_network
from emulator.orchestration.plan import ue_plans
from emulator.orchestration.scenarios import Faults
from emulator.sip import TimerConfig
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import TopologyError
from emulator.topology import load_topology
from emulator.topology import parse_topology
from emulator.topology import topology_path
from emulator.topology.model import OverloadLimit
from emulator.topology.population import populate
from nodes.sipnode import SipNode
from nodes.ue import McClient

DEFAULT = DEFAULT_TOPOLOGY
TEXT = DEFAULT.read_text()


def test_default_topology_is_the_seed() -> None:
    topology = load_topology(DEFAULT)
    assert [s.name for s in topology.systems] == ["primary", "partner"]
    partner = topology.system("partner")
    assert partner.node("mc-server").host == "127.0.20.3"
    assert partner.migration_profiles[0].partner_identity == \
        "sip:alice.visitor@mcx.partner.example"
    assert topology.local_plmn.serves == "partner"
    assert topology.ue("ue-alice").home == "primary"
    # No link joins the two MC systems: that is the scenario.
    for link in topology.links:
        ends = {link.a.split(".")[0], link.b.split(".")[0]}
        assert ends != {"primary", "partner"}
    # Every node has its own address.
    hosts = [n.host for s in topology.systems for n in s.nodes]
    assert len(hosts) == len(set(hosts))


def test_groups_name_their_members_by_mcptt_id() -> None:
    """A migrant is a member by its migration profile, with its partner-assigned ID."""
    partner = load_topology(DEFAULT_TOPOLOGY).system("partner")
    (group,) = partner.groups
    assert group.group_id == "sip:fire-1@mcx.partner.example"
    assert partner.member_ids(group) == ("sip:carol@mcx.partner.example",
                                         "sip:dave@mcx.partner.example",
                                         "sip:alice.visitor@mcx.partner.example")
    assert partner.find("gms") is not None
    assert load_topology(DEFAULT_TOPOLOGY).system("primary").find("gms") is None


@pytest.mark.parametrize("value,ok", [("60", True), ("0", False), ("true", False),
                                      ("86401", False)])
def test_the_security_token_lifetime_is_a_users_setting(value: str, ok: bool) -> None:
    text = TEXT.replace("migrate_to: [partner]",
                        f"migrate_to: [partner]\n        security_token_lifetime: {value}", 1)
    if ok:
        alice = parse_topology(text, "t.yaml").system("primary").user("alice")
        assert alice.security_token_lifetime == int(value)
        return
    with pytest.raises(TopologyError, match="security_token_lifetime"):
        parse_topology(text, "bad.yaml")


@pytest.mark.parametrize("value,ok", [("publish", True), ("register", True),
                                      ("sip-digest", False), ("1", False)])
def test_a_ue_chooses_how_it_hands_over_its_tokens(value: str, ok: bool) -> None:
    """24.379 §7.2.1: by REGISTER (the default) or by PUBLISH, per UE."""
    assert parse_topology(TEXT, "t.yaml").ue("ue-alice").service_authorisation == "register"
    text = TEXT.replace("host: 127.0.40.1}", f"host: 127.0.40.1, service_authorisation: {value}}}",
                        1)
    if ok:
        assert parse_topology(text, "t.yaml").ue("ue-alice").service_authorisation == value
        return
    with pytest.raises(TopologyError, match=r"ues\.ue-alice\.service_authorisation"):
        parse_topology(text, "bad.yaml")


def test_topology_is_frozen() -> None:
    topology = load_topology(DEFAULT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.name = "x"  # type: ignore[misc]
    assert {link.transport for link in topology.with_transport("tls").links} == {"tls"}


def _line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


@pytest.mark.parametrize("old,new,path,message", [
    ("host: 127.0.20.3", "host: 10.1.1.1", "systems.partner.nodes.mc-server.host",
     "not in 127.0.0.0/8"),
    ("host: 127.0.20.3", "host: 127.0.0.1", "systems.partner.nodes.mc-server.host",
     "127.0.0.1"),
    ("host: 127.0.20.3", "host: nowhere", "systems.partner.nodes.mc-server.host",
     "not an IP address"),
    ("organization: Partner", "organisation: Partner", "systems.partner.organisation",
     "unknown key"),
    ("[ue-alice, primary.sip-core]", "[ue-alice, primary.sip-cor]", "links[0].between[1]",
     "no node named 'primary.sip-cor'"),
    ("{role: mc-server, host: 127.0.20.3, sip: {port: 5060}}",
     "{role: mc-server, host: 127.0.20.3, sip: {port: 99999}}",
     "systems.partner.nodes.mc-server.sip.port", "out of range"),
    ("{role: mc-server, host: 127.0.20.3, sip: {port: 5060}}",
     "{role: mc-server, host: 127.0.20.3, sip: {port: 5060, transports: [udp, sctp]}}",
     "systems.partner.nodes.mc-server.sip.transports[1]", "sctp"),
    ("{role: mc-server, host: 127.0.20.3, sip: {port: 5060}}",
     "{role: mc-server, host: 127.0.20.3}", "systems.partner.nodes.mc-server",
     "needs a 'sip' interface"),
    ("{role: cms,       host: 127.0.20.5, https: 9444}",
     "{role: idms,      host: 127.0.20.5, https: 9444}", "systems.partner.nodes",
     "exactly one node with role 'idms'"),
    ("ue-alice: {user: alice, home: primary", "ue-alice: {user: dave, home: primary",
     "ues.ue-alice.user", "has no user 'dave'"),
    ("serves: partner", "serves: tertiary", "local_plmn.serves", "no MC system"),
    ("migrate_to: [partner]", "migrate_to: [primary]", "systems.primary.users.alice.migrate_to",
     "not another MC system"),
    ("primary: primary", "primary: elsewhere",
     "systems.partner.migration_profiles.alice.primary", "no MC system"),
    ("mcptt_id: sip:carol@mcx.partner.example", "mcptt_id: carol",
     "systems.partner.users.carol.mcptt_id", "not a SIP URI"),
    ("host: 127.0.20.3", "host: 127.0.20.2", "systems.partner.nodes.mc-server.host",
     "already used by partner.sip-core"),
    ("ue_pool: 127.0.31.0/26", "ue_pool: 10.0.0.0/24", "local_plmn.ue_pool",
     "not inside 127.0.0.0/8"),
    ("members: [carol, dave, alice]", "members: [carol, mallory]",
     "systems.partner.groups.fire-1.members[1]", "neither a user nor a migration profile"),
    ("id: sip:fire-1@mcx.partner.example", "id: fire-1",
     "systems.partner.groups.fire-1.id", "not a SIP URI"),
    ("{role: gms,       host: 127.0.20.6, https: 9445}", "{role: gms,       host: 127.0.20.6}",
     "systems.partner.nodes.gms", "needs an 'https' port"),
    ("t1: 500ms", "t1: 20s", "sip_timers.t1", "out of range"),
    ("t1: 500ms", "t1: fast", "sip_timers.t1", "fast"),
    ("t2: 4s", "t2: 100ms", "sip_timers.t2", "must not be below T1"),
    ("t4: 5s", "t5: 5s", "sip_timers.t5", "unknown key"),
    ("max_per_source: 64", "max_per_source: 2000", "limits.connections.max_per_source",
     "must not exceed max_connections"),
    ("enabled: true", "enabled: 1", "limits.overload.enabled", "must be bool"),
    ("target: 50ms", "target: true", "limits.overload.target", "not a boolean"),
    ("interval: 200ms", "interval: 2min", "limits.overload.interval", "2min"),
])
def test_errors_name_line_and_key_path(old: str, new: str, path: str, message: str) -> None:
    assert old in TEXT, old
    text = TEXT.replace(old, new, 1)
    with pytest.raises(TopologyError) as error:
        parse_topology(text, "bad.yaml")
    text_of_error = str(error.value)
    assert text_of_error.startswith("bad.yaml:"), text_of_error
    assert f": {path}: " in text_of_error, text_of_error
    assert message in text_of_error, text_of_error
    # The line is the one that was changed (or the mapping it belongs to).
    line = int(text_of_error.split(":")[1])
    assert line == _line_of(TEXT, old) or path in ("systems.partner.nodes",), text_of_error


@pytest.mark.parametrize("text,message", [
    ("", "the file is empty"),
    ("name: x\nsystems: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("name: x\n", "missing required key 'systems'"),
    ("name: 5\nsystems: {}\n", "must be str"),
])
def test_structural_errors(text: str, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_topology(text, "bad.yaml")


def test_overload_limits_reach_every_nodes_plan(tmp_path: Path) -> None:
    topology = parse_topology(TEXT.replace("target: 50ms", "target: 80ms"), "o.yaml")
    assert topology.limits.overload == OverloadLimit(target=0.08)
    plans = plan_network(topology, Faults(), tmp_path)
    assert {plan.overload for plan in plans} == {topology.limits.overload}


def test_sip_timers_reach_every_sip_node_of_the_run(tmp_path: Path) -> None:
    text = TEXT.replace("t1: 500ms", "t1: 50ms").replace("t2: 4s", "t2: 400ms")
    topology = parse_topology(text, "fast.yaml")
    assert topology.sip_timers == TimerConfig(t1=0.05, t2=0.4, t4=5.0)
    plans = plan_network(topology, Faults(), tmp_path)
    assert {plan.sip_timers for plan in plans} == {topology.sip_timers}
    # Outside the file's nodes too: a load run's generated UEs.
    generated = populate(topology, 2)
    assert {plan.sip_timers for plan in ue_plans(generated.topology, generated.ues, tmp_path)} \
        == {topology.sip_timers}
    # And into the nodes' transaction layers: the network's from their plans, the UE's.
    assert {SipNode.planned(plan)["timers"] for plan in plans} == {topology.sip_timers}
    client = McClient("ue-alice", "127.0.40.1", "udp", timers=topology.sip_timers)
    assert client.endpoint.layer.timers == topology.sip_timers


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "nope.yaml")


ACCESS = "{between: [ue-alice, visited-plmn.gateway], transport: udp}"


def _impaired(impair: str, transport: str = "udp") -> str:
    return TEXT.replace(ACCESS, "{between: [ue-alice, visited-plmn.gateway], "
                                f"transport: {transport}, impair: {impair}}}")


def test_link_impairments_both_ways_or_per_sender() -> None:
    both = parse_topology(_impaired("{delay: 50ms, jitter: 5ms, loss: 20%, rate: 2mbit, "
                                    "seed: 4}"), "x.yaml")
    [link] = [link for link in both.links if link.impair_ab is not None]
    assert link.impair_ab == link.impair_ba
    assert (link.impair_ab.delay, link.impair_ab.jitter, link.impair_ab.loss,
            link.impair_ab.rate, link.impair_ab.seed) == (0.05, 0.005, 0.2, 2e6, 4)
    one_way = parse_topology(_impaired("{visited-plmn.gateway: {loss: 0.1}}"), "x.yaml")
    [link] = [link for link in one_way.links if link.impair_ba is not None]
    assert link.impair_ab is None and link.impair_ba is not None
    assert link.impairment_from("visited-plmn.gateway") == link.impair_ba
    with pytest.raises(ValueError, match="only a udp link"):
        both.with_transport("tcp")  # would deliver what the link is meant to lose


@pytest.mark.parametrize("impair,transport,message", [
    ("{delay: 5 parsecs}", "udp", "'5 parsecs' is not a duration (units: us, ms, s)"),
    ("{loss: 120%}", "udp", "must be between 0 and 100 %"),
    ("{loss: yes}", "udp", "must be a share, not a boolean"),
    ("{rate: 0}", "udp", "must be above 0"),
    ("{lose: 5%}", "udp", "unknown key 'lose'"),
    ("{loss: 5%}", "tcp", "need a udp link: tcp delivers every message"),
])
def test_bad_impairments_name_the_key(impair: str, transport: str, message: str) -> None:
    with pytest.raises(TopologyError, match="links") as refused:
        parse_topology(_impaired(impair, transport), "bad.yaml")
    assert message in str(refused.value)
    assert str(refused.value).startswith(f"bad.yaml:{_line_of(TEXT, ACCESS)}: links[2].impair")


EDGE = topology_path("kamailio-edge")
EDGE_TEXT = EDGE.read_text()


def test_an_outside_program_is_a_node_with_its_command_and_probe() -> None:
    edge = load_topology(EDGE).system("partner").node("edge-proxy")
    assert edge.exec is not None and edge.exec.command[0] == "kamailio"
    assert (edge.exec.probe, edge.exec.probe_port) == ("tcp", 5060)
    assert load_topology(EDGE).system("partner").find("edge-proxy") == edge
    assert load_topology(DEFAULT).system("partner").find("edge-proxy") is None


@pytest.mark.parametrize("old,new,path,message", [
    ("kind: exec", "kind: container", "systems.partner.nodes.edge-proxy.kind",
     "is not 'role' (one of ours) or 'exec'"),
    ("role: edge-proxy", "role: sip-core", "systems.partner.nodes.edge-proxy.role",
     "of an exec node is not one of edge-proxy, exec"),
    ('"tcp:{host}:{port}"', '"tcp:{host}:{porrt}"',
     "systems.partner.nodes.edge-proxy.command[10]", "unknown placeholder {porrt}"),
    ("{partner.sip-core.uri}", "{partner.sip-cor.uri}",
     "systems.partner.nodes.edge-proxy.command[12]", "unknown placeholder"),
    ("probe: {transport: tcp, port: 5060}", "probe: {transport: sctp, port: 5060}",
     "systems.partner.nodes.edge-proxy.probe.transport", "is not udp or tcp"),
    ("command: [kamailio,", "command: [[], kamailio,",
     "systems.partner.nodes.edge-proxy.command", "non-empty list"),
])
def test_exec_node_errors_name_the_key_path(old: str, new: str, path: str,
                                            message: str) -> None:
    assert old in EDGE_TEXT, old
    with pytest.raises(TopologyError) as error:
        parse_topology(EDGE_TEXT.replace(old, new, 1), "bad.yaml")
    assert f": {path}: " in str(error.value) and message in str(error.value), str(error.value)


def test_an_exec_node_without_a_port_to_probe_is_refused() -> None:
    text = EDGE_TEXT.replace("        sip: {port: 5060, transports: [udp, tcp]}\n", "").replace(
        "        probe: {transport: tcp, port: 5060}\n", "").replace(
        "role: edge-proxy", "role: exec")
    with pytest.raises(TopologyError, match="needs a port to probe"):
        parse_topology(text, "bad.yaml")


def test_forcing_a_transport_an_outside_program_does_not_listen_on_is_refused() -> None:
    with pytest.raises(ValueError, match=r"partner\.edge-proxy does not listen on tls"):
        load_topology(EDGE).with_transport("tls")
    assert load_topology(EDGE).with_transport("tcp").link_transport(
        "partner.edge-proxy", "partner.sip-core") == "tcp"
