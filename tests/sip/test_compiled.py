"""The compiled SIP core (mypyc) is used only when built from the sources in the tree, and
the sources pass the same battery when run as they are."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.sip import compiled

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A copy of the core's sources with a (dummy) complete build and its manifest."""
    for name in compiled.MODULES:
        shutil.copy(compiled.HERE / f"{name}.py", tmp_path)
        (tmp_path / f"{name}{SUFFIX}").write_bytes(b"")
    (tmp_path / f"{compiled.GROUP}__mypyc{SUFFIX}").write_bytes(b"")
    (tmp_path / compiled.MANIFEST.name).write_text(json.dumps(
        {"python": sys.implementation.cache_tag, "sources": compiled.fingerprint(tmp_path)}))
    return tmp_path


def test_a_build_of_the_current_sources_is_used(build: Path) -> None:
    assert compiled.choose(build, {}) == "compiled"


def test_an_edited_source_runs_from_source_and_says_which(build: Path) -> None:
    with (build / "message.py").open("a") as source:
        source.write("# edited after the build\n")
    assert compiled.choose(build, {}) == \
        "source: message.py changed since the build (make setup rebuilds it)"


def test_a_build_without_manifest_or_for_another_python_is_not_used(build: Path) -> None:
    manifest = build / compiled.MANIFEST.name
    manifest.write_text(json.dumps({"python": "cpython-00", "sources": {}}))
    assert compiled.choose(build, {}).startswith("source: compiled for another Python")
    manifest.write_text("{not json")
    assert compiled.choose(build, {}).startswith("source: the compiled build has no manifest")


def test_a_partial_build_or_none_runs_from_source(build: Path) -> None:
    (build / f"uri{SUFFIX}").unlink()
    assert compiled.choose(build, {}).startswith("source: the compiled build is incomplete")
    for path in compiled.extensions(build):
        path.unlink()
    assert compiled.choose(build, {}).startswith("source: not compiled")


def test_mcx_sip_pure_runs_from_source(build: Path) -> None:
    assert compiled.choose(build, {"MCX_SIP_PURE": "1"}) == "source: MCX_SIP_PURE=1"


def test_the_modules_loaded_are_the_ones_the_state_names() -> None:
    for name in compiled.MODULES:
        module = importlib.import_module(f"emulator.sip.{name}")
        is_extension = not str(module.__file__).endswith(".py")
        assert is_extension == (compiled.STATE == "compiled"), (name, module.__file__)


NESTED = "test_the_sources_pass_the_sip_battery_uncompiled"


@pytest.mark.slow
def test_the_sources_pass_the_sip_battery_uncompiled() -> None:
    # CI runs the compiled core (a missing build fails it: tests/support/tools.py), so the
    # sources, which a machine without a compiler runs, are checked here, in a process of
    # their own: the same battery, RFC 4475 and the fuzzers included.
    env = {**os.environ, "MCX_SIP_PURE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/sip", "-q", "-n", "0", "-p", "no:cacheprovider",
         "--deselect", f"tests/sip/test_compiled.py::{NESTED}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
