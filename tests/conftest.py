"""Suite-wide: MCX_REQUIRE_TOOLS (see tests/support/tools.py), and which tests may run
beside the others."""

from __future__ import annotations

import ctypes
import os
import subprocess
from typing import Any

import pytest

from tests.support.tools import REQUIRE_TOOLS
from tests.support.tools import missing

PRIVATE_LOOPBACK = os.geteuid() == 0
"""As root, every xdist worker but the first runs its tests in a network namespace of its
own, whose ``lo`` is a loopback no other worker sees: two runs of the same topology, with
the same fixed 127.0.x addresses and ports, then run side by side (and their kernel
captures see only their own packets).  Without root the loopback tests take turns."""

CLONE_NEWNET = 0x40000000  # <sched.h>; os.unshare is Python 3.12+

PURE = (
    # Nothing here opens a socket, starts a node or runs a program: it may run on either
    # worker at the same time as the network tests.  Without a private loopback per worker
    # the loopback tests are one xdist group, run in order on one worker, because they use
    # the topologies' fixed 127.0.x addresses.  The netns tests are a group either way:
    # the namespace names they create are global.
    "tests/sip/", "tests/documents/", "tests/topology/", "tests/review/",
    "tests/hostile/test_policies.py", "tests/identity/test_trust_and_tokens.py",
    "tests/identity/test_xml_safety.py", "tests/test_layers.py",
    "tests/orchestration/test_plan.py", "tests/capture/test_diff.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.nodeid.startswith(PURE):
            # Runs in network namespaces (198.18.0.0/15, their own links and captures) share
            # nothing with loopback runs: a group of their own, beside the loopback one.
            netns = "test_netns.py" in item.nodeid or "[netns" in item.nodeid
            if netns or not PRIVATE_LOOPBACK:
                item.add_marker(pytest.mark.xdist_group("netns" if netns else "network"))


def own_loopback() -> None:
    """Move the thread that runs the tests (xdist runs them on the main thread) into a new
    network namespace with only ``lo``, up.  The nodes, programs and threads it starts
    inherit it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def pytest_configure(config: pytest.Config) -> None:
    if PRIVATE_LOOPBACK and os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        own_loopback()


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_TOOLS and (lacking := missing()):
        raise pytest.UsageError("MCX_REQUIRE_TOOLS=1, but this machine lacks: "
                                + ", ".join(lacking))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if REQUIRE_TOOLS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under MCX_REQUIRE_TOOLS=1 (no test may skip): {reason}"
    return report
