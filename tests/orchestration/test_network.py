"""The Network object's clean-up holds when it is interrupted."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from emulator.orchestration import Network
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import load_topology


@pytest.mark.parametrize("moment", ["nodes", "capture"])
async def test_a_cancel_during_stop_still_stops_everything_and_publishes(
        tmp_path: Path, moment: str) -> None:
    """Ctrl-C landing while the network stops its nodes, or while it waits for tcpdump to
    write its last packets: every node stops, tcpdump exits, the capture is published,
    and then the cancellation goes on."""
    network = Network(load_topology(DEFAULT_TOPOLOGY), run_dir=tmp_path / "run")
    await network.start()
    capture = network.kernel_capture
    process = capture._process if capture is not None else None
    target: object = network.runner.nodes["ue-carol"]  # started last, stopped first
    if moment == "capture" and capture is not None:
        target = capture
    stopping = asyncio.Event()
    original = target.stop  # type: ignore[attr-defined]

    async def stop_and_tell() -> None:
        stopping.set()
        await asyncio.sleep(0)  # the cancel lands here, inside the stop
        await original()

    target.stop = stop_and_tell  # type: ignore[attr-defined]
    task = asyncio.create_task(network.stop())
    await stopping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert network.capture_file is not None and network.capture_file.exists()
    if process is not None:
        assert process.returncode is not None, "tcpdump was left running"
    # The partner SIP core's port is free again: its node was stopped, not abandoned.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.20.2", 5060))
