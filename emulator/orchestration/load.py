"""Load mode: many users migrate into one partner system at a given rate (issue 11).

Each generated UE (:mod:`emulator.topology.population`) is the real UE role,
``nodes.ue.UserEquipment``, driven through the seed's flow over real sockets:

========================  ====================================================
phase                     what the UE does
========================  ====================================================
``login``                 OIDC auth code + PKCE at the primary IdMS (33.180 B.4)
``profile``               downloads its user profile: partner access info
``security-token``        RFC 8693 exchange at the primary IdMS (33.180 B.7.2)
``attach``                attaches to the local PLMN (gateway, project-defined API)
``partner-token``         RFC 7523 grant at the partner IdMS, from the local PLMN
``register``              REGISTER through the gateway until its 200 (24.229, 24.379)
========================  ====================================================

``login`` and ``profile`` happen at home before the user leaves, so every UE first goes
through them (the *home* stage), then every UE migrates (the *migration* stage, from the
security token to the 200): its time is what the KPI judges, and the stage's length is
the run's time to complete.
Load UEs leave out their own reg-event subscription (the gateway, as P-CSCF, still
subscribes for each): it is not part of the migration, and would double the SIP load.

UEs start at ``rate`` per second, at most ``concurrency`` in flight; nothing waits on a
wall clock except that pacing.  They are the network's *crowd* (``Network(...,
crowd=population.ues)``): on loopback each binds its own addresses, in netns placement they
share the crowd's namespace (their sockets are opened there) and a radio attach gives each
its pool address, as it does a UE node.  Results are plain data for the report
(:mod:`.loadreport`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field

import aiohttp

from emulator.documents.profile import PartnerSystem
from emulator.process import cpu_seconds
from emulator.process import settled
from emulator.refusal import Refusal
from emulator.sip.events import Address
from emulator.topology.population import Population
from nodes import UserEquipment
from nodes.base import tls_client
from nodes.ue import SipOutcome

from .network import Network
from .plan import ue_plans

logger = logging.getLogger(__name__)

HOME_PHASES = ("login", "profile")
MIGRATION_PHASES = ("security-token", "attach", "partner-token", "register")
PHASES = HOME_PHASES + MIGRATION_PHASES
KPI_LIMIT = 0.300
"""TS 22.179 KPI 1 (MCPTT access time below 300 ms for 99 % of requests); the project
reads the migration's time, security token to the 200 (REGISTER), as that access time."""
KPI_SHARE = 0.99


@dataclass
class UeRecord:
    """One UE's run: seconds per phase reached, and why it stopped if it did."""

    name: str
    phases: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    """``phase: status error``; None when the UE registered."""
    retries: int = 0
    """REGISTERs sent again after a 503 with Retry-After (see :func:`retrying`)."""

    @property
    def migration(self) -> float | None:
        if self.failure is not None or any(p not in self.phases for p in MIGRATION_PHASES):
            return None
        return sum(self.phases[p] for p in MIGRATION_PHASES)


@dataclass(frozen=True)
class LoadOptions:
    ues: int
    rate: float
    """UEs started per second."""
    concurrency: int = 1000
    """Most UEs in flight at once (a bound on the generator's own memory)."""
    registration_expires: int = 3600
    register: bool = True
    """False stops each UE after its partner token (a benchmark then registers them)."""


@dataclass
class LoadResult:
    options: LoadOptions
    placement: str
    capture: bool
    records: list[UeRecord]
    seconds: float
    """From the first UE's start to the last UE's end."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process used over the stage, by name (:func:`cpu_used`)."""
    stage_ues: int = 0
    """UEs the stage took on (one that failed in an earlier stage it did not)."""
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    """The cores this process (and so the run) may use."""

    def cpu_per_ue(self) -> dict[str, float]:
        """Milliseconds of CPU per UE through the stage, by process, most first: what one
        migration costs each node (and the load generator), whatever the rate."""
        if not self.stage_ues:
            return {}
        spent = {name: seconds * 1000 / self.stage_ues for name, seconds in self.cpu.items()}
        return dict(sorted(spent.items(), key=lambda item: -item[1]))

    def capacity(self) -> float | None:
        """UEs per second the stage's CPU cost allows: the cores shared out, and no process
        on more than one of them (each runs one event loop); None if unmeasured."""
        spent = self.cpu_per_ue()
        total = sum(spent.values())
        if total <= 0:
            return None
        return min(self.cores * 1000 / total, 1000 / max(spent.values()))

    @property
    def failures(self) -> Counter[str]:
        return Counter(r.failure for r in self.records if r.failure is not None)

    @property
    def registered(self) -> int:
        """UEs through every phase asked of them: registered, unless ``register`` was
        False (then: holding a partner token)."""
        return sum(1 for r in self.records if r.failure is None)

    def samples(self, phase: str) -> list[float]:
        """Seconds of ``phase`` (or ``migration``) over the UEs that completed it."""
        if phase == "migration":
            return sorted(m for r in self.records if (m := r.migration) is not None)
        return sorted(r.phases[phase] for r in self.records if phase in r.phases)

    def kpi_met(self) -> bool | None:
        """KPI 1 over every UE: a failed migration counts as one over the limit."""
        if not self.records:
            return None
        within = sum(1 for r in self.records if (m := r.migration) is not None and
                     m <= KPI_LIMIT)
        return within >= KPI_SHARE * len(self.records)

    def to_json(self) -> dict[str, object]:
        phases = {p: percentiles(self.samples(p)) for p in (*PHASES, "migration")}
        capacity = self.capacity()
        return {
            "ues": self.options.ues, "rate": self.options.rate, "placement": self.placement,
            "capture": self.capture, "seconds": round(self.seconds, 3),
            "registered": self.registered, "failures": dict(self.failures),
            "retries": sum(r.retries for r in self.records),
            "phases_ms": phases,
            "cpu_ms_per_ue": {name: round(ms, 2) for name, ms in self.cpu_per_ue().items()},
            "cores": self.cores,
            "capacity_per_s": None if capacity is None else round(capacity, 1),
            "kpi": {"name": "TS 22.179 KPI 1 (project reading: migration time)",
                    "limit_ms": KPI_LIMIT * 1000, "share": KPI_SHARE, "met": self.kpi_met()},
        }


def percentiles(samples: list[float]) -> dict[str, float | int]:
    """p50/p90/p99/max in milliseconds (nearest rank), over sorted ``samples``."""
    if not samples:
        return {"count": 0}

    def rank(q: float) -> float:
        return samples[min(len(samples) - 1, max(0, math.ceil(q * len(samples)) - 1))]

    return {"count": len(samples), "p50": round(rank(0.50) * 1000, 2),
            "p90": round(rank(0.90) * 1000, 2), "p99": round(rank(0.99) * 1000, 2),
            "max": round(samples[-1] * 1000, 2)}


LOAD_GENERATOR = "load generator"
"""This process's name in :func:`cpu_used`, where the nodes run elsewhere: the UEs'."""
IN_PROCESS = "nodes and UEs (inproc)"
"""Its name in ``inproc``, where it runs the nodes too."""


def cpu_used(net: Network) -> dict[str, float]:
    """CPU seconds so far of this process (:data:`LOAD_GENERATOR`, or :data:`IN_PROCESS`)
    and of each process ``net`` runs (:meth:`Network.process_ids`), by name; one gone is
    left out."""
    own = cpu_seconds()
    assert own is not None  # this process is not gone
    used = {IN_PROCESS if net.placement == "inproc" else LOAD_GENERATOR: own}
    for name, pid in net.process_ids().items():
        seconds = cpu_seconds(pid)
        if seconds is not None:
            used[name] = seconds
    return used


def cpu_since(before: dict[str, float], net: Network) -> dict[str, float]:
    """CPU seconds each process used since ``before`` (:func:`cpu_used`)."""
    now = cpu_used(net)
    return {name: round(now[name] - before[name], 3) for name in now if name in before}


def raise_descriptor_limit(wanted: int) -> int:
    """Room for every UE's socket: the soft (and, as root, hard) limit raised to ``wanted``
    when lower; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class LoadGenerator:
    """Drives a population's UEs through the migration, against a running network: first
    every UE at home (login, profile), then every UE's migration, each stage paced at
    ``rate`` (users log in at home long before they cross a border)."""

    def __init__(self, net: Network, population: Population, options: LoadOptions,
                 progress: Callable[[str, UeRecord], None] | None = None) -> None:
        self.net = net
        self.population = population
        self.options = options
        self.progress = progress
        topology = net.topology
        self.home = topology.system(population.template.home)
        self.partner = topology.system(topology.local_plmn.serves)
        crowd = {ue.name: ue for ue in net.crowd}  # as placed: netns moves their addresses
        if any(ue.name not in crowd for ue in population.ues):
            raise ValueError("the network was not built for this population's UEs: "
                             "Network(population.topology, crowd=population.ues)")
        plans = ue_plans(topology, tuple(crowd[ue.name] for ue in population.ues),
                         net.run_dir)
        # One TLS client context for all: each would otherwise read the CA files again.
        context = tls_client(plans[0].credentials) if plans else None
        self.ues = [UserEquipment(plan, ssl_context=context) for plan in plans]
        self.specs = {spec.name: spec for spec in population.ues}
        self.access: dict[str, PartnerSystem] = {}
        """Per UE: the partner access information its profile gave."""
        self.records: list[UeRecord] = []

    async def __aenter__(self) -> LoadGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every UE (their sockets and HTTPS connections); attachments stay."""
        await asyncio.gather(*(ue.stop() for ue in self.ues), return_exceptions=True)

    async def run(self) -> LoadResult:
        """Both stages; the UEs stay up (registered) until :meth:`close`."""
        # Per UE: its SIP socket and its HTTPS connections; inproc, the servers' ends too.
        raise_descriptor_limit(8 * len(self.ues) + 4096)
        records = [UeRecord(ue.name) for ue in self.ues]
        await self._stage("home", self._at_home, records)
        result = await self._stage("migration", self._migrate, records)
        self.records = records
        return result

    async def reregister(self, rate: float | None = None) -> LoadResult:
        """Every registered UE REGISTERs again with its partner token (a refresh of its
        registration, 24.229 §5.1.1.4), paced at ``rate`` (the options' when None): the
        soak's load."""
        records = [UeRecord(r.name) if r.failure is None else r for r in self.records]
        return await self._stage("re-register", self._register, records, rate)

    async def _stage(self, stage: str,
                     step: Callable[[UserEquipment, UeRecord], Awaitable[None]],
                     records: list[UeRecord], rate: float | None = None) -> LoadResult:
        """Start ``step`` for each UE not failed yet, at ``rate``, at most ``concurrency``
        at once; the stage's result: the seconds from the first start to the last end, and
        the CPU each process used meanwhile."""
        rate = rate or self.options.rate
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(ue: UserEquipment, record: UeRecord) -> None:
            try:
                if record.failure is None:
                    await step(ue, record)
            except _Stopped:
                pass
            except Exception as exc:  # a defect: counted, and the other UEs go on
                logger.exception("%s: %s stage failed", ue.name, stage)
                record.failure = f"{stage}: {type(exc).__name__}"
            finally:
                gate.release()
                if self.progress is not None:
                    self.progress(stage, record)

        going = sum(1 for record in records if record.failure is None)
        # The UEs and what earlier stages left them are held for the whole run: frozen out
        # of the stage's collections, which would otherwise walk them all again and again
        # (10,000 UEs: ~480,000 objects, full collections of up to 1 s stalling every UE).
        with settled():
            before = cpu_used(self.net)
            started = loop.time()
            with self.net.crowd_entered():
                async with asyncio.TaskGroup() as group:
                    for index, (ue, record) in enumerate(zip(self.ues, records, strict=True)):
                        await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
                        await gate.acquire()
                        group.create_task(one(ue, record))
            seconds = loop.time() - started
        return LoadResult(self.options, self.net.placement,
                          bool(self.net.capture_files or self.net.kernel_captures), records,
                          seconds, cpu_since(before, self.net), going)

    async def _at_home(self, ue: UserEquipment, record: UeRecord) -> None:
        user = self.home.user(self.specs[ue.name].user)
        cms = self.home.node("cms").https_url
        assert cms is not None
        async with _phase(record, "login"):
            await ue.login(self.home.issuer)
        async with _phase(record, "profile"):
            profile = await ue.download_profile(cms, user.mcptt_id)
            partner = profile.partner(self.partner.name)
            if partner is None or not partner.authorised_to_migrate:
                raise Refusal("profile", f"no migration to {self.partner.name} allowed", 0)
            self.access[ue.name] = partner
        # Until it migrates the UE needs no HTTPS: thousands of idle TLS connections would
        # hold 256 kB of buffer each at the servers (asyncio's SSL protocol), for 75 s.
        await ue.close_https()

    async def _migrate(self, ue: UserEquipment, record: UeRecord) -> None:
        partner = self.access[ue.name]
        async with _phase(record, "security-token"):
            await ue.request_security_token(f"{self.home.issuer}/token", partner.idms_audience)
        async with _phase(record, "attach"):
            via = await self.net.radio_attach(ue.name)  # netns: the pool address it is given
            address = await ue.attach(partner.attach_url, partner.sip_transport, via=via)
        self.net.names[address] = ue.name  # the capture names it there too
        async with _phase(record, "partner-token"):
            await ue.request_partner_token(partner.idms_token_endpoint)
        await ue.close_https()  # done with HTTPS until a refresh, much later
        if self.options.register:
            await self._register(ue, record)

    async def _register(self, ue: UserEquipment, record: UeRecord) -> None:
        """REGISTER through the gateway with the partner token, until the 200."""
        spec = self.specs[ue.name]
        partner = self.access[ue.name]
        token = str((ue.partner_token or {}).get("access_token", ""))
        ids = {"mcptt_id": partner.partner_impu}
        migration = self.partner.migration_profile(spec.user, self.home.name)
        if migration is not None and migration.partner_mcdata_id:
            ids["mcdata_id"] = migration.partner_mcdata_id
        if migration is not None and migration.partner_mcvideo_id:
            ids["mcvideo_id"] = migration.partner_mcvideo_id
        gateway = Address(partner.sip_transport, partner.sip_core_host, partner.sip_core_port)
        async with _phase(record, "register"):
            outcome = await retrying(lambda: ue.register(
                gateway, partner.sip_domain, partner.partner_impu, partner.partner_impi,
                token, ids, visited=True, via_p_cscf=True,
                expires=self.options.registration_expires, subscribe=False), record)
            if outcome.status != 200:
                raise Refusal(outcome.reason, outcome.reason, outcome.status)


RETRIES = 3
"""REGISTERs a UE sends again after a 503 that says when (project-defined)."""
MAX_RETRY_AFTER = 30
"""Longest Retry-After a load UE waits; longer, it gives up (the run would only stall)."""


async def retrying(attempt: Callable[[], Awaitable[SipOutcome]], record: UeRecord, *,
                   sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> SipOutcome:
    """``attempt()``, and again after a 503 with Retry-After, as the response asks (RFC 3261
    §21.5.4: a node that sheds load says when to come back; overload control does).  At
    most :data:`RETRIES` times, counted in ``record.retries``; the wait is part of the
    phase, as it is of what the user waits."""
    outcome = await attempt()
    for _ in range(RETRIES):
        wait = outcome.retry_after
        if outcome.status != 503 or wait is None or wait > MAX_RETRY_AFTER:
            break
        record.retries += 1
        await sleep(wait)
        outcome = await attempt()
    return outcome


@asynccontextmanager
async def _phase(record: UeRecord, phase: str) -> AsyncIterator[None]:
    """Time ``phase`` into ``record``; a refusal or a transport error ends the UE's run
    there, recorded as ``phase: status error``."""
    mark = time.perf_counter()
    try:
        yield
    except Refusal as exc:
        record.failure = f"{phase}: {exc.status} {exc.error}"
        raise _Stopped from None
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        record.failure = f"{phase}: {type(exc).__name__}"
        raise _Stopped from None
    record.phases[phase] = time.perf_counter() - mark


class _Stopped(Exception):
    """A UE's run ended at a failed phase (already recorded)."""


async def run_load(net: Network, population: Population, options: LoadOptions,
                   progress: Callable[[str, UeRecord], None] | None = None) -> LoadResult:
    """Migrate ``population``'s UEs into the running ``net``; they stop at the end."""
    async with LoadGenerator(net, population, options, progress) as generator:
        return await generator.run()
