"""One node's descriptor limit holds under a connection flood: the accept-time budget
(three quarters of the process's limit, emulator.transport.guard) and the eviction of
silent connections keep the IdMS serving logins, and every other node serving too.

The issue saw 20,000 idle connections exhaust a process's 20,000 descriptors; here the
partner IdMS's limit is lowered to 1,024 (prlimit, as root, while it runs: the budget
follows the limit as it is at each accept), below its listener cap, so the budget is
what binds.  benchmarks/fd_exhaustion.py does it at full size.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import pytest

from emulator.transport.tls import client_context
from nodes.idm_client import IdmClient
from tests.support.flood import idle_connections
from tests.support.flood import open_descriptors
from tests.support.up import running_up

LIMIT = 1024
SOURCES = [f"127.0.50.{n}" for n in range(1, 33)]


async def _login(state: dict, system: str, user: str) -> str:  # type: ignore[type-arg]
    node = state["nodes"][f"{system}.idms"]
    ssl = client_context([Path(state["ca_certs"][system]).read_bytes()])
    client = IdmClient(state["oidc_client"]["client_id"], state["oidc_client"]["redirect_uri"],
                       ssl)
    async with client:
        tokens = await client.login(node["http"], user, state["users"][user]["password"])
    return tokens.access_token


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering another process's limit needs root")
def test_an_idms_flooded_past_its_descriptor_limit_keeps_logging_users_in(
        tmp_path: Path) -> None:
    with running_up(tmp_path, "--placement", "proc") as (_, state, _):
        idms = state["nodes"]["partner.idms"]
        host, port = idms["http"].removeprefix("https://").split(":")
        resource.prlimit(idms["pid"], resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
        with idle_connections(host, int(port), LIMIT + 512, sources=SOURCES) as connected:
            assert connected > LIMIT
            # It takes connections until its budget (3/4 of the limit), then makes room
            # by closing its oldest silent ones: it never reaches the limit.
            deadline = time.monotonic() + 60
            while open_descriptors(idms["pid"]) < LIMIT * 3 // 4 - 64:
                assert time.monotonic() < deadline, open_descriptors(idms["pid"])
                time.sleep(0.05)
            assert asyncio.run(_login(state, "partner", "carol"))
            assert open_descriptors(idms["pid"]) < LIMIT
            assert asyncio.run(_login(state, "primary", "alice"))  # another node, unharmed
