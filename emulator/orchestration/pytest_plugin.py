"""pytest fixtures for running the emulator inside your own async tests.

Installed with the package (entry point ``pytest11``), so in any project that
has the emulator installed::

    async def test_my_client_registers(mcx_network):
        state = mcx_network.state()          # addresses, users, CA files
        ue = mcx_network.ues["ue-alice"]     # or drive your own client
        ...

``mcx_network`` starts the topology named by the ``--mcx-topology`` option
(a file, or the name of a shipped topology; default: ``default``) with the
seed's faults (none), in a fresh run directory under pytest's ``tmp_path``,
and stops it (finalising the capture) after the test.  ``mcx_topology``
gives the loaded topology alone.

``mcx_network`` is async, so it needs pytest-asyncio (``pip install
'mcx-migration-emulator[pytest]'``); without it, pytest still runs every
other test and this fixture says what is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.topology import Topology
from emulator.topology import load_topology
from emulator.topology import topology_path

from .network import Network

# Missing, it is reported by the fixture, not by every pytest run in the environment.
HAVE_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mcx-topology", default="default",
                     help="topology file (or shipped topology name) for the mcx_network fixture")


@pytest.fixture
def mcx_topology(request: pytest.FixtureRequest) -> Topology:
    return load_topology(topology_path(request.config.getoption("--mcx-topology")))


if HAVE_PYTEST_ASYNCIO:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def mcx_network(mcx_topology: Topology, tmp_path: Path) -> AsyncIterator[Network]:
        async with Network(mcx_topology, run_dir=tmp_path / "mcx-run") as network:
            yield network
else:
    @pytest.fixture
    def mcx_network() -> None:
        pytest.fail("the mcx_network fixture needs pytest-asyncio: "
                    "pip install 'mcx-migration-emulator[pytest]'", pytrace=False)
