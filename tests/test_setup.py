"""``make setup``'s choice of interpreter (``scripts/pick-python``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = """
import importlib.util, os, sys, sysconfig
print(sys.implementation.name, sys.version_info >= (3, 11),
      importlib.util.find_spec("ensurepip") is not None,
      os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
"""


def test_the_interpreter_picked_can_make_the_venv_and_build_the_sip_core() -> None:
    """What it names is a CPython 3.11+ that can make a venv (ensurepip) and has the headers
    the compiled SIP core is built against, and it prefers the distribution's own build
    where that qualifies (README "The interpreter")."""
    picked = subprocess.run([str(ROOT / "scripts" / "pick-python")], capture_output=True,
                            text=True, check=True, timeout=30).stdout.strip()
    facts = subprocess.run([picked, "-c", CHECK], capture_output=True, text=True, check=True,
                           timeout=30).stdout.split()
    assert facts == ["cpython", "True", "True", "True"], (picked, facts)
    system = Path("/usr/bin/python3")
    if system.exists():
        qualifies = subprocess.run([str(system), "-c", CHECK], capture_output=True,
                                   text=True, timeout=30).stdout.split()
        assert (picked == str(system)) == (qualifies == facts)
