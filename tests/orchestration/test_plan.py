"""Plans from a topology and a scenario's faults: a pure function, tested without sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.keystore import SystemFiles
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Faults
from emulator.orchestration import plan_network
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from emulator.topology import load_topology
from nodes import IdmsOptions
from nodes import McServerOptions
from nodes import NodePlan
from nodes import SipCoreOptions

RUN = Path("/nonexistent/run")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


def by_name(plans: tuple[NodePlan, ...]) -> dict[str, NodePlan]:
    return {plan.name: plan for plan in plans}


def test_one_plan_per_node_in_start_order(topology: Topology) -> None:
    names = [plan.name for plan in plan_network(topology, Faults(), RUN)]
    assert names == ["primary.idms", "primary.cms", "primary.mc-server", "primary.sip-core",
                     "partner.idms", "partner.cms", "partner.gms", "partner.mc-server",
                     "partner.sip-core", "visited-plmn.gateway", "ue-alice", "ue-carol",
                     "ue-dave", "ue-bob"]


def test_planning_is_pure(topology: Topology, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = plan_network(topology, Faults(), run_dir)
    assert first == plan_network(topology, Faults(), run_dir)
    assert not run_dir.exists()  # names files, writes none


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_plan_survives_json(topology: Topology, scenario: str) -> None:
    for plan in plan_network(topology, SCENARIOS[scenario].faults, RUN):
        text = plan.to_json()
        json.loads(text)  # plain JSON, no live object
        assert NodePlan.from_json(text) == plan


def test_credential_paths_follow_the_keystore_layout(topology: Topology) -> None:
    plans = by_name(plan_network(topology, Faults(), RUN))
    partner = SystemFiles(RUN / "pki", "partner")
    idms = plans["partner.idms"].credentials
    assert idms.signing_key == str(partner.signing_key)
    assert idms.trust_dir == str(partner.trust)
    assert idms.tls_certificate == str(partner.tls_certificate("idms"))
    assert idms.keylog == str(RUN / "tls-keys.log")
    # Only an IdMS holds a signing key; the CMS verifies with the certificate alone.
    assert [p.name for p in plans.values() if p.credentials.signing_key] == \
        ["primary.idms", "partner.idms"]
    gateway = plans["visited-plmn.gateway"].credentials
    assert gateway.tls_certificate == str(SystemFiles(RUN / "pki", "visited-plmn")
                                          .tls_certificate("gateway"))
    assert len(gateway.trusted_cas) == 3  # both MC systems and the local PLMN


def test_peers_follow_the_links(topology: Topology) -> None:
    plans = by_name(plan_network(topology.with_transport("tls"), Faults(), RUN))
    core = plans["visited-plmn.gateway"].peer("sip-core")
    assert core is not None
    assert (core.name, core.transport, core.port) == ("partner.sip-core", "tls", 5061)
    assert plans["ue-alice"].sip_listeners[0].protocol == "tls"
    # The P-CSCF is in the trust domain of the system it serves only (RFC 3325).
    assert plans["partner.sip-core"].peer("gateway") is not None
    assert plans["primary.sip-core"].peer("gateway") is None
    assert isinstance(plans["partner.sip-core"].options, SipCoreOptions)


def test_faults_are_data_in_the_plans(topology: Topology) -> None:
    seed = by_name(plan_network(topology, Faults(), RUN))
    dropped = by_name(plan_network(topology, Faults(drop_migration_profiles=True), RUN))
    for name in ("partner.mc-server", "partner.idms"):  # the whole partner system lacks it
        options = dropped[name].options
        assert isinstance(options, (McServerOptions, IdmsOptions))
        assert options.migration_profiles == () and seed[name].options != options
    only_mc = by_name(plan_network(topology, Faults(drop_mc_server_profiles=True), RUN))
    options = only_mc["partner.mc-server"].options
    assert isinstance(options, McServerOptions) and options.migrant_identities == ()
    assert only_mc["partner.idms"] == seed["partner.idms"]
    later = by_name(plan_network(topology, Faults(partner_clock_offset=700.0), RUN))
    idms = later["partner.idms"].options
    assert isinstance(idms, IdmsOptions) and idms.clock_offset == 700.0
    assert later["primary.idms"] == seed["primary.idms"]
    denied = by_name(plan_network(topology, Faults(deny_migration=True), RUN))
    idms = denied["primary.idms"].options
    assert isinstance(idms, IdmsOptions)
    assert all(account.migration_targets == () for account in idms.accounts)
    # Nothing else changes with a fault: the other nodes' plans are the seed's.
    assert {n for n in seed if seed[n] != denied[n]} == {"primary.idms", "primary.cms"}


def test_partner_modes(topology: Topology) -> None:
    direct = by_name(plan_network(topology, Faults(partner_mode="direct"), RUN))
    for name in ("primary.mc-server", "partner.mc-server"):
        assert direct[name].options.mode == "direct"  # type: ignore[union-attr]
        assert direct[name].credentials.trust_dir is not None
    baseline = by_name(plan_network(topology, Faults(partner_mode="interconnection"), RUN))
    partner = baseline["partner.mc-server"]
    assert partner.options.mode == "interconnection"  # type: ignore[union-attr]
    primary = partner.peer("mc-server")
    assert primary is not None and primary.name == "primary.mc-server"
    # The primary has no migration profile: it is asked, and asks nobody.
    assert baseline["primary.mc-server"].options.mode == "normal"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="partner_mode"):
        plan_network(topology, Faults(partner_mode="sideways"), RUN)


@pytest.mark.parametrize("change,message", [
    ({"host": 5}, "expected str, got int @ $.host"),
    ({"role": "cms"}, "a cms takes CmsOptions"),
    ({"role": "router"}, "unknown role 'router'"),
    ({"surprise": 1}, "extra fields found (surprise)"),
    ({"listeners": [{"protocol": "udp", "host": "x", "port": "5060"}]},
     "expected int, got str @ $.listeners[0].port"),
])
def test_a_broken_plan_is_refused_with_the_path(topology: Topology, change: dict[str, object],
                                               message: str) -> None:
    plan = plan_network(topology, Faults(), RUN)[0]
    with pytest.raises(ValueError, match="not a node plan") as refused:
        NodePlan.from_dict({**plan.to_dict(), **change})
    assert message in str(refused.value)


def test_plans_cannot_change_once_made(topology: Topology) -> None:
    plans = by_name(plan_network(topology, Faults(), RUN))
    mc = plans["primary.mc-server"].options
    assert isinstance(mc, McServerOptions)
    with pytest.raises(TypeError):
        mc.allowed_partners["sip:mallory@mcx.primary.example"] = ("partner",)  # type: ignore[index]
    idms = plans["partner.idms"].options
    assert isinstance(idms, IdmsOptions)
    with pytest.raises(TypeError):
        idms.migration_profiles[0].mc_ids["mcptt_id"] = "sip:mallory@x"  # type: ignore[index]
    with pytest.raises(TypeError):
        idms.accounts[0].mc_ids["mcptt_id"] = "sip:mallory@x"  # type: ignore[index]


def test_impaired_links_are_planned_on_the_sending_nodes_with_their_own_seeds() -> None:
    from emulator.topology import topology_path

    lossy = load_topology(topology_path("lossy"))
    plans = by_name(plan_network(lossy, Faults(), RUN, seed=5))
    [to_gateway] = plans["ue-alice"].impairments
    [to_ue] = plans["visited-plmn.gateway"].impairments
    assert (to_gateway.peer, to_gateway.hosts) == ("visited-plmn.gateway", ("127.0.30.1",))
    assert (to_ue.peer, to_ue.hosts) == ("ue-alice", ("127.0.40.1",))
    assert to_gateway.impairment.loss == to_ue.impairment.loss == 0.2
    assert to_gateway.impairment.seed != to_ue.impairment.seed  # each direction its own
    other = by_name(plan_network(lossy, Faults(), RUN, seed=6))
    assert other["ue-alice"].impairments[0].impairment.seed != to_gateway.impairment.seed
    assert plans["partner.sip-core"].impairments == ()
    for plan in plans.values():
        assert NodePlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("name,applicable", [("default", True), ("two-partners", True),
                                             ("kamailio-edge", False)])
def test_wrong_partner_runs_only_where_a_second_partner_exists(name: str,
                                                               applicable: bool) -> None:
    """``run --scenario all`` on a topology with one partner skips wrong-partner, saying
    why; the default topology brings two-partners for it."""
    from emulator.orchestration.scenarios import not_applicable
    from emulator.orchestration.session import topology_for
    from emulator.topology import topology_path

    scenario = SCENARIOS["wrong-partner"]
    given = load_topology(topology_path(name))
    reason = not_applicable(scenario, topology_for(scenario, given))
    assert (reason is None) == applicable
    if not applicable:
        assert reason is not None and "two partner systems" in reason
    assert all(not_applicable(s, given) is None for s in SCENARIOS.values()
               if s.variant != "wrong-partner")
