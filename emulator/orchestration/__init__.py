"""Orchestration: from a topology to running nodes, and the scenarios that drive them.

* :mod:`.plan`: the topology and a scenario's :class:`Faults` become one frozen
  :class:`~nodes.NodePlan` per node (pure);
* :mod:`.provisioning`: the run's PKI and the out-of-band step, before anything runs;
* :mod:`.runner`: starts plans in dependency order under one TaskGroup, stops in reverse;
* :mod:`.network`: all of that plus the capture, as one object (the Python API);
* :mod:`.scenarios`, :mod:`.driver`, :mod:`.session`: the catalogue, running a
  scenario with verdicts, and the runs ``run`` and ``up`` make.

It sits above the roles (``nodes``) and below the CLI; see the README's layout.
Its names load on first use (PEP 562): a node process, forked by the zygote, imports
``emulator.orchestration.serve`` and the roles only, not the scenarios, the capture
analysis and the netns layer this package also holds (a third of the zygote's start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from .driver import ScenarioDriver
    from .driver import ScenarioResult
    from .driver import Verdict
    from .network import Network
    from .plan import Faults
    from .plan import plan_network
    from .provisioning import PROVISION_MODES
    from .provisioning import SystemMaterial
    from .provisioning import create_system
    from .provisioning import load_system
    from .provisioning import prepare_pki
    from .provisioning import provision
    from .runner import Runner
    from .runner import run_nodes
    from .runner import start_order
    from .scenarios import SCENARIOS
    from .scenarios import Expectation
    from .scenarios import Scenario
    from .session import Report
    from .session import run_scenario
    from .session import serve
    from .steps import StepLog

_WHERE = {
    "ScenarioDriver": "driver",
    "ScenarioResult": "driver",
    "Verdict": "driver",
    "Network": "network",
    "Faults": "plan",
    "plan_network": "plan",
    "PROVISION_MODES": "provisioning",
    "SystemMaterial": "provisioning",
    "create_system": "provisioning",
    "load_system": "provisioning",
    "prepare_pki": "provisioning",
    "provision": "provisioning",
    "Runner": "runner",
    "run_nodes": "runner",
    "start_order": "runner",
    "SCENARIOS": "scenarios",
    "Expectation": "scenarios",
    "Scenario": "scenarios",
    "Report": "session",
    "run_scenario": "session",
    "serve": "session",
    "StepLog": "steps",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: the next lookup is an ordinary global
    return value


__all__ = [
    "PROVISION_MODES", "SCENARIOS", "Expectation", "Faults", "Network", "Report", "Runner",
    "Scenario", "ScenarioDriver", "ScenarioResult", "StepLog", "SystemMaterial", "Verdict",
    "create_system", "load_system", "plan_network", "prepare_pki", "provision", "run_nodes",
    "run_scenario", "serve", "start_order",
]
