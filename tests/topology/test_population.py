"""Generated users for a load run (emulator/topology/population.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emulator.orchestration.plan import Faults
from emulator.orchestration.plan import plan_network
from emulator.topology import load_topology
from emulator.topology.bundled import DEFAULT_TOPOLOGY
from emulator.topology.population import PopulationError
from emulator.topology.population import populate
from nodes.plan import IdmsOptions
from nodes.plan import McServerOptions


def test_each_copy_is_its_own_user_with_its_own_profile_ue_and_address() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    population = populate(topology, 3)
    assert population.template.name == "ue-alice"
    primary = population.topology.system("primary")
    partner = population.topology.system("partner")
    user = primary.user("alice-00002")
    assert user.mcptt_id == "sip:alice-00002@mcx.primary.example"
    assert user.mcdata_id == "sip:alice-00002.data@mcx.primary.example"
    assert user.migrate_to == ("partner",) and user.password == "alice-secret"
    profile = partner.migration_profile("alice-00002", "primary")
    assert profile is not None
    assert profile.partner_identity == "sip:alice-00002.visitor@mcx.partner.example"
    assert [ue.host for ue in population.ues] == ["127.1.0.1", "127.1.0.2", "127.1.0.3"]
    assert {ue.user for ue in population.ues} == {"alice-00001", "alice-00002", "alice-00003"}
    # The generated UEs are not nodes; the topology's own stay.
    assert population.topology.ues == topology.ues
    # The pool holds them all and the topology's own UEs, away from every node.
    pool = population.topology.local_plmn.ue_pool
    assert len(pool) == 3 + len(topology.local_plmn.ue_pool)
    assert not set(pool) & set(topology.host_names())


def test_ten_thousand_users_are_planned_once_each(tmp_path: Path) -> None:
    """The plan of a 10,000-user load lists every user once in the IdMS and MC server
    plans (it once took 14 s: per-user scans of the topology made it quadratic)."""
    population = populate(load_topology(DEFAULT_TOPOLOGY), 10_000)
    plans = {p.name: p for p in plan_network(population.topology, Faults(), tmp_path)}
    idms = plans["primary.idms"].options
    assert isinstance(idms, IdmsOptions) and len(idms.accounts) == 10_000 + 2
    mc_server = plans["partner.mc-server"].options
    assert isinstance(mc_server, McServerOptions)
    assert len(mc_server.migration_profiles) == 10_001


@pytest.mark.parametrize("count", [0, 32_001])
def test_a_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(PopulationError, match=r"within 1\.\.32000"):
        populate(load_topology(DEFAULT_TOPOLOGY), count)


def test_a_topology_without_a_migrating_ue_cannot_be_populated() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    stay_home = dataclasses.replace(topology, ues=tuple(
        u for u in topology.ues if u.user != "alice"))
    with pytest.raises(PopulationError, match="nothing to copy"):
        populate(stay_home, 10)
