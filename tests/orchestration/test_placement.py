"""proc placement: every infrastructure node its own OS process, supervised.

Judged from outside the supervisor where it matters: process ids, the kernel's
view of who listens, the capture, and what is left after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from emulator.orchestration import SCENARIOS
from emulator.orchestration import Faults
from emulator.orchestration import Network
from emulator.orchestration import plan_network
from emulator.orchestration import prepare_pki
from emulator.orchestration import run_scenario
from emulator.orchestration.placement import NodeDied
from emulator.orchestration.placement import ProcessNode
from emulator.orchestration.placement import RemoteUe
from emulator.orchestration.placement import Zygote
from emulator.orchestration.remote import RemoteError
from emulator.refusal import Refusal
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from emulator.topology import load_topology
from nodes import Tokens
from tests.support.scenarios import PROC_SENSITIVE
from tests.support.up import running_up

ROOT = Path(__file__).resolve().parent.parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and \
        "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def held(pids: Iterable[int]) -> dict[int, int]:
    """A pidfd of each of ``pids`` still running, opened now: once a process ends its pid may
    be another's (pid_max is 32,768 here, and the suite starts processes by the thousand),
    and a pidfd stays with the process it was opened on."""
    handles = {}
    for pid in pids:
        try:
            handles[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
    return handles


def still_running(handles: dict[int, int], *, within: float) -> list[int]:
    """The pids of ``handles`` (:func:`held`) whose process has not ended ``within`` seconds
    from now, waiting on their pidfds (events, not a polling sleep); closes them."""
    deadline = time.monotonic() + within
    waiting = dict(handles)
    try:
        while waiting and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(waiting.values()), [], [], left)
            if not readable:
                break
            waiting = {pid: fd for pid, fd in waiting.items() if fd not in readable}
        return sorted(waiting)
    finally:
        for fd in handles.values():
            os.close(fd)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


@pytest.mark.parametrize("name", PROC_SENSITIVE)
async def test_every_scenario_passes_in_proc_placement(topology: Topology, tmp_path: Path,
                                                       name: str) -> None:
    report = await run_scenario(topology, SCENARIOS[name], pcap_root=tmp_path,
                                placement="proc")
    assert report.passed, report.text(ladder=False)
    assert (report.run_dir / "logs" / "partner.sip-core.log").exists()


async def test_each_node_is_its_own_process_and_none_outlives_the_run(
        topology: Topology, tmp_path: Path) -> None:
    network = Network(topology, run_dir=tmp_path / "run", placement="proc")
    async with network:
        pids = {name: node.pid for name, node in network.runner.nodes.items()
                if isinstance(node, ProcessNode)}
        assert len(pids) == 14 and len(set(pids.values())) == 14  # the UEs too
        assert os.getpid() not in pids.values()
        assert all(alive(pid) for pid in pids.values())  # type: ignore[arg-type]
        state = network.state()
        assert state["nodes"]["partner.sip-core"]["pid"] == pids["partner.sip-core"]
        # Every process of the run carries its prefix, as `ps` and `pgrep` show it.
        for name, pid in pids.items():
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            assert title == f"{network.prefix}{name}"
            assert Path(f"/proc/{pid}/comm").read_text().strip() == title[:15]
        assert network.prefix.startswith(f"mcx-{os.getpid()}-")
        # Any node reports its process's live memory (benchmarks/scale.py reads it).
        core = network.runner.nodes["partner.sip-core"]
        assert isinstance(core, ProcessNode)
        report = (await core.call("memory", {"census": 3}))["result"]
        assert report["pss_kib"] > 0 and report["rss_kib"] >= report["pss_kib"]
        assert report["blocks"] > 0 and len(report["census"]) == 3
        # Ready, the node froze its start-up out of the collector's reach (settle): a full
        # collection walks what came after, a few hundred objects, not its thousands.
        assert report["tracked"] < 1000 and report["gc_ms"] >= 0
    assert not any(alive(pid) for pid in pids.values())  # type: ignore[arg-type]


async def test_a_ue_in_its_own_process_is_driven_like_one_in_process(
        topology: Topology, tmp_path: Path) -> None:
    """The same procedures, the same results (dataclasses), the same refusals."""
    async with Network(topology, run_dir=tmp_path / "run", placement="proc") as network:
        ue = network.ues["ue-alice"]
        assert isinstance(ue, RemoteUe)
        tokens = await ue.login(topology.system("primary").issuer)
        assert isinstance(tokens, Tokens) and tokens.access_token
        with pytest.raises(Refusal) as refused:  # the IdMS's OAuth error, across the link
            await ue.request_security_token(f"{topology.system('primary').issuer}/token",
                                            "https://nowhere.example")
        assert refused.value.error == "invalid_target" and refused.value.status == 400
        with pytest.raises(Refusal, match="not attached"):
            await ue.private_call("sip:carol@mcx.partner.example", visited=True)
        with pytest.raises(RemoteError, match="no remote call 'stop'"):
            await ue.call("stop", {})
        address = await ue.attach(f"{topology.local_plmn.gateway.https_url}/attach")
        assert ue.state()["visited_address"] == address  # every answer refreshes the state
        assert (await ue.received()).calls_answered == ()


async def test_a_node_that_dies_fails_the_run_with_its_name(topology: Topology,
                                                             tmp_path: Path) -> None:
    network = Network(topology, run_dir=tmp_path / "run", placement="proc")
    await network.start()
    node = network.runner.nodes["partner.sip-core"]
    assert isinstance(node, ProcessNode)
    node.kill()
    with pytest.raises(asyncio.CancelledError):  # the runner cancels whoever drives the run
        await asyncio.Event().wait()
    with pytest.raises(NodeDied, match=r"partner\.sip-core \(pid \d+\) exited with -9"):
        await network.stop()
    assert network.capture_file is not None  # the capture is still published


async def test_restart_on_request_gives_a_new_process_on_the_same_address(
        topology: Topology, tmp_path: Path) -> None:
    async with Network(topology, run_dir=tmp_path / "run", placement="proc") as network:
        before = network.runner.nodes["partner.sip-core"]
        restarted = await network.runner.restart("partner.sip-core")
        assert isinstance(before, ProcessNode) and isinstance(restarted, ProcessNode)
        assert restarted.pid != before.pid and not alive(before.pid)  # type: ignore[arg-type]
        assert restarted.state()["listeners"][0] == {"protocol": "udp", "host": "127.0.20.2",
                                                    "port": 5060}


def test_node_command_serves_a_plan_and_refuses_a_broken_one(topology: Topology,
                                                              tmp_path: Path) -> None:
    prepare_pki(topology, tmp_path, mode="normal", now=dt.datetime.now(dt.UTC))
    plan = next(p for p in plan_network(topology, Faults(), tmp_path)
                if p.name == "partner.sip-core")
    good, bad = tmp_path / "plan.json", tmp_path / "bad.json"
    good.write_text(plan.to_json())
    bad.write_text(json.dumps({**plan.to_dict(), "host": 5}))
    refused = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "node",
                              "--plan", str(bad)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "expected str, got int @ $.host" in refused.stderr
    with subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "node",
                           "--plan", str(good)], stdout=subprocess.PIPE, text=True) as node:
        try:
            assert node.stdout is not None
            line = node.stdout.readline()
            assert line.startswith("READY ")
            assert json.loads(line[6:])["name"] == "partner.sip-core"
        finally:
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=30) == 0


def test_a_killed_supervisor_leaves_no_process_behind(tmp_path: Path) -> None:
    """`up --placement proc` killed with SIGKILL: its node processes, the zygote and tcpdump
    all end with it (parent-death signals); what nothing could remove, its control-socket
    directories, `clean` removes."""
    with running_up(tmp_path, "--placement", "proc") as (up, state, _):
        pids = [node["pid"] for node in state["nodes"].values()]
        children = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True,
                                  text=True).stdout.split()
        watched = held(pids + [int(pid) for pid in children])
        up.kill()
        up.wait()
    assert still_running(watched, within=20) == []
    left = list(Path(tempfile.gettempdir()).glob(f"mcx-{up.pid}-*"))
    cleaned = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "clean"],
                             capture_output=True, text=True, timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert [path for path in left if path.exists()] == []


def test_the_zygote_forks_only_where_no_thread_or_loop_runs(tmp_path: Path) -> None:
    """A fork copies one thread: the zygote refuses to be forked beside another thread, or
    inside a running event loop, and leaves nothing behind (the Network spawns one then)."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        with pytest.raises(RuntimeError, match="before any thread or event loop"):
            Zygote.fork("mcx-test-")
    finally:
        release.set()
        other.join()

    async def in_a_loop() -> None:
        Zygote.fork("mcx-test-")

    with pytest.raises(RuntimeError, match="before any thread or event loop"):
        asyncio.run(in_a_loop())
    with pytest.raises(ValueError, match="proc and netns"):
        Network(load_topology(DEFAULT_TOPOLOGY), run_dir=tmp_path, placement="inproc",
                zygote=object())  # type: ignore[arg-type]


def test_clean_ends_the_processes_of_a_run_that_is_gone() -> None:
    """A process named with the prefix of a run whose supervisor is gone is `clean`'s to end,
    and so is its control-socket directory; those of a live run (ours) are not."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"mcx-{gone.pid}-0-zygote-"))
    (stale / "control").write_bytes(b"")
    live = Path(tempfile.mkdtemp(prefix=f"mcx-{os.getpid()}-0-zygote-"))
    script = ("import setproctitle, signal, sys; setproctitle.setproctitle(sys.argv[1]); "
              "print('named', flush=True); signal.pause()")
    orphan = subprocess.Popen([sys.executable, "-c", script, f"mcx-{gone.pid}-0-partner.idms"],
                              stdout=subprocess.PIPE, text=True)
    ours = subprocess.Popen([sys.executable, "-c", script, f"mcx-{os.getpid()}-0-partner.idms"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout is not None and orphan.stdout.readline() == "named\n"
        assert ours.stdout is not None and ours.stdout.readline() == "named\n"
        cleaned = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "clean"],
                                 capture_output=True, text=True, timeout=60)
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"pid {orphan.pid} mcx-{gone.pid}-0-partner.idms" in cleaned.stdout
        assert orphan.wait(timeout=30) == -9
        assert ours.poll() is None
        assert str(stale) in cleaned.stdout and not stale.exists()
        assert live.is_dir()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
        for process in (orphan, ours):
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
