"""Many migrating users from one template: the topology of a load run (issue 11).

``populate(topology, n)`` copies the topology's migrating user ``n`` times.  Each copy is
a user of the primary (same password and services, its own MC service IDs), with a
migration profile at the partner (its own partner identity) and a UE with its own home
address.  The gateway's pool grows to hold them all.

The generated UEs are *not* added to ``topology.ues``: those become nodes, while a load
run drives the generated ones from the load generator (``emulator.orchestration.load``).

Names and addresses are PROJECT-DEFINED: user ``alice`` gives ``alice-00001`` ...; an MC
service ID ``sip:alice.data@d`` gives ``sip:alice-00001.data@d``; home addresses come
from ``127.1.0.0/17``, pool addresses from ``127.1.128.0/17``: both inside 127.0.0.0/15,
which the netns placement maps onto 198.18.0.0/15 (the shipped topologies use 127.0/16).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from dataclasses import replace

from .model import MigrationProfileSpec
from .model import Topology
from .model import UeSpec

MAX_UES = 32_000
"""Enough for a mass migration; the pool (these and the topology's own UEs) still fits
its /17."""
HOME_BASE = ipaddress.IPv4Address("127.1.0.0")
POOL = ipaddress.IPv4Network("127.1.128.0/17")


class PopulationError(ValueError):
    """The topology cannot be populated as asked (the message says why)."""


@dataclass(frozen=True)
class Population:
    """A topology with ``ues`` more migrating users, and those users' UEs."""

    topology: Topology
    ues: tuple[UeSpec, ...]
    template: UeSpec
    """The topology's own migrating UE the others copy."""


def template_ue(topology: Topology) -> UeSpec:
    """The first UE whose user may migrate to the system the local PLMN serves, and has a
    migration profile there."""
    partner = topology.system(topology.local_plmn.serves)
    profiled = {p.user for p in partner.migration_profiles}
    for ue in topology.ues:
        user = topology.system(ue.home).user(ue.user)
        if partner.name in user.migrate_to and user.name in profiled:
            return ue
    raise PopulationError(f"no UE of the topology may migrate to {partner.name} (a user "
                          "with migrate_to and a migration profile there): nothing to copy")


def populate(topology: Topology, count: int) -> Population:
    """``topology`` with ``count`` copies of its migrating user (see the module doc)."""
    if not 1 <= count <= MAX_UES:
        raise PopulationError(f"the number of UEs must be within 1..{MAX_UES}, not {count}")
    template = template_ue(topology)
    home = topology.system(template.home)
    partner = topology.system(topology.local_plmn.serves)
    user = home.user(template.user)
    profile = next(p for p in partner.migration_profiles if p.user == user.name)
    taken = {u.name for u in home.users} | {p.user for p in partner.migration_profiles}
    names = [f"{user.name}-{i:05d}" for i in range(1, count + 1)]
    clash = next((n for n in names if n in taken), None)
    if clash is not None:
        raise PopulationError(f"system {home.name} already has a user {clash}")
    homes = [str(HOME_BASE + 1 + i) for i in range(count)]
    # The pool: big enough for the template's UEs too.
    pool_size = count + len(topology.local_plmn.ue_pool)
    if pool_size > POOL.num_addresses - 2:
        raise PopulationError(f"a pool of {pool_size} addresses does not fit {POOL}: "
                              "fewer UEs")
    pool = tuple(str(POOL.network_address + 1 + i) for i in range(pool_size))
    used = set(topology.host_names())
    overlap = next((h for h in (*homes, *pool) if h in used), None)
    if overlap is not None:
        raise PopulationError(f"generated address {overlap} is already a host of the "
                              "topology (load runs use 127.1.0.0/16)")

    def renamed(uri: str | None, name: str) -> str | None:
        if uri is None:
            return None
        scheme, _, rest = uri.partition(":")
        local, at, domain = rest.partition("@")
        local = local.replace(user.name, name, 1) if user.name in local else f"{local}-{name}"
        return f"{scheme}:{local}{at}{domain}"

    users, profiles, ues = [], [], []
    for name, host in zip(names, homes, strict=True):
        mcptt_id = renamed(user.mcptt_id, name)
        assert mcptt_id is not None
        users.append(replace(user, name=name, mcptt_id=mcptt_id,
                             mcdata_id=renamed(user.mcdata_id, name),
                             mcvideo_id=renamed(user.mcvideo_id, name)))
        identity = renamed(profile.partner_identity, name)
        assert identity is not None
        profiles.append(MigrationProfileSpec(
            name, profile.primary, identity, renamed(profile.partner_mcdata_id, name),
            renamed(profile.partner_mcvideo_id, name)))
        ues.append(UeSpec(f"ue-{name}", name, home.name, host, template.service_authorisation))
    systems = []
    for system in topology.systems:
        if system.name == home.name:
            system = replace(system, users=(*system.users, *users))
        if system.name == partner.name:
            system = replace(system, migration_profiles=(*system.migration_profiles,
                                                         *profiles))
        systems.append(system)
    plmn = replace(topology.local_plmn, ue_pool=pool)
    return Population(replace(topology, systems=tuple(systems), local_plmn=plmn),
                      tuple(ues), template)
