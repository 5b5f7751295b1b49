#!/usr/bin/env python3
"""Compile the sans-IO SIP core with mypyc, in place (``make setup`` runs it).

The sources stay the truth: ``emulator/sip/compiled.py`` uses the extensions only while
every source matches the manifest written here, and runs the sources otherwise.  A
machine without a C compiler or Python's headers keeps the sources (a note says so),
except under ``MCX_REQUIRE_TOOLS=1`` (CI), where that fails, as a missing tool does.

    python scripts/compile_sip.py [--clean]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIP = ROOT / "emulator" / "sip"
LOG = ROOT / "build" / "compile_sip.log"


def _policy() -> Any:
    # By path, not through the package: importing emulator.sip would load the very
    # extensions this script is about to overwrite.
    spec = importlib.util.spec_from_file_location("_mcx_sip_compiled", SIP / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean(policy: Any) -> None:
    policy.MANIFEST.unlink(missing_ok=True)
    for path in policy.extensions():
        path.unlink()


def missing_tools() -> list[str]:
    missing = []
    if shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        missing.append("a C compiler (Debian: gcc)")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        missing.append("Python's headers (Debian: python3-dev)")
    return missing


def build(policy: Any) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    sources = policy.fingerprint()  # before building: an edit meanwhile shows as a mismatch
    paths = [str((SIP / name).relative_to(ROOT)) for name in sources]
    LOG.parent.mkdir(exist_ok=True)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            setup(name="mcx-sip-core", packages=[],
                  ext_modules=mypycify(paths, group_name=f"emulator.sip.{policy.GROUP}",
                                       opt_level="3"),
                  script_args=["build_ext", "--inplace", "--parallel", str(os.cpu_count() or 1)])
    except (SystemExit, Exception) as exc:
        LOG.write_text(output.getvalue())
        raise RuntimeError(f"mypyc failed ({exc}); its output is in {LOG}") from None
    LOG.write_text(output.getvalue())
    policy.MANIFEST.write_text(json.dumps(
        {"python": sys.implementation.cache_tag, "sources": sources}, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled build")
    args = parser.parse_args()
    os.chdir(ROOT)  # mypyc names the modules by their paths from here
    policy = _policy()
    clean(policy)  # a failed build must not leave half of one
    if args.clean:
        return 0
    required = os.environ.get("MCX_REQUIRE_TOOLS") == "1"
    missing = missing_tools()
    if missing:
        print(f"note: the SIP core runs from its sources: no {' and no '.join(missing)}",
              file=sys.stderr)
        return 1 if required else 0
    try:
        build(policy)
    except RuntimeError as exc:
        print(f"{'error' if required else 'note'}: the SIP core runs from its sources: {exc}",
              file=sys.stderr)
        return 1 if required else 0
    state = policy.choose()
    if state != "compiled":
        print(f"error: compiled, but not usable: {state}", file=sys.stderr)
        return 1
    print(f"SIP core compiled with mypyc ({len(policy.MODULES)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
