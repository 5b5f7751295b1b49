"""Which scenarios the bulk tests run.

* :data:`QUICK`: all but those that take real minutes (long-stay, run by
  tests/scenario/test_stay.py with a shorter stay).
* :data:`IN_PROCESS`: QUICK but those tests/scenario/test_stay.py runs and judges from
  the capture anyway, and those test_scenarios.py runs with its own assertions.
* :data:`PLACEMENT_SENSITIVE`: those whose outcome goes through SIP across nodes, which
  the proc bulk test runs.  The others are refused inside one IdMS (the out-of-band
  certificate, the security token's lifetime, replay, target or audience), which is the
  same code in every placement; in-process they all run.
* :data:`NETNS_SENSITIVE`: what netns changes over proc is the network (addresses,
  routes, the radio attach and detach, the move home, a node's namespace outliving its
  process), so the netns bulk test runs the scenarios that use each of those; the rest
  is the proc code, run by the proc bulk test (the suite's time budget).
"""

from __future__ import annotations

from emulator.orchestration import SCENARIOS

QUICK = [name for name, scenario in SCENARIOS.items() if not scenario.faults.stay]
IDMS_ONLY = {name for name, scenario in SCENARIOS.items()
             if scenario.expect is not None and scenario.expect.step in (
                 "security-token", "partner-token", "partner-token-replay")}
PLACEMENT_SENSITIVE = [name for name in QUICK if name not in IDMS_ONLY]
MC_SERVER_REFUSALS = {"mc-server-profile-missing", "refused-after-registration", "direct",
                      "scope-escalation"}
"""Refused or decided at the partner MC server on the path forged-token takes, which the
proc bulk test keeps (in process they all run)."""
PROC_SENSITIVE = [name for name in PLACEMENT_SENSITIVE if name not in MC_SERVER_REFUSALS]
JUDGED_IN_TEST_STAY = {"deregister", "return-home", "scope-escalation", "wrong-partner"}
RUN_BY_OWN_TESTS = {"default", "partner-restart", "partner-restart-amnesia"}
"""tests/scenario/test_scenarios.py runs these in process with more to assert (every
transport; what the UE did after the restart)."""
IN_PROCESS = [name for name in QUICK
              if name not in JUDGED_IN_TEST_STAY and name not in RUN_BY_OWN_TESTS]
NETNS_SENSITIVE = ["default", "unattached-ue", "deregister", "return-home", "partner-restart",
                   "with-interconnection", "publish-authorisation"]
