"""Installed as a wheel, the emulator works away from the checkout.

The wheel is built from a copy of this tree and installed (not editable)
into a fresh virtual environment.  Its third-party dependencies are borrowed
from the test environment through a path file, so the test needs no
download; the project itself comes only from the wheel, and pytest-asyncio
(the ``[pytest]`` extra) only where a test adds it.  Then, from ``/``:

* ``mcx-emulator run --scenario default -q`` finds its shipped topology and
  exits 0;
* a pytest file outside the repository uses the ``mcx_network`` fixture of
  the installed plugin;
* without pytest-asyncio, pytest still runs, and the fixture says what is
  missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURELIB = Path(sysconfig.get_path("purelib"))
OWN = ("__editable__", "mcx_migration_emulator")
"""This project's entries in the test environment: the wheel must not see them."""

pytestmark = pytest.mark.slow

FIXTURE_TEST = '''
async def test_fixture_from_the_installed_plugin(mcx_network):
    import emulator
    assert "site-packages" in emulator.__file__          # the wheel, not the checkout
    state = mcx_network.state()
    assert state["nodes"]["partner.sip-core"]["sip"][0]["port"] == 5060
    tokens = await mcx_network.ues["ue-alice"].login(
        mcx_network.topology.system("primary").issuer)
    assert tokens.access_token
'''

PLAIN_TEST = '''
def test_unrelated():
    assert True

def test_wants_the_network(mcx_network):
    pass
'''


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def _borrow(into: Path, *, pytest_asyncio: bool) -> Path:
    """A folder of links to the test environment's packages, without this project's."""
    into.mkdir()
    for entry in PURELIB.iterdir():
        if entry.name.startswith(OWN) or entry.suffix == ".pth" or \
                (entry.name.startswith("pytest_asyncio") and not pytest_asyncio):
            continue
        (into / entry.name).symlink_to(entry)
    return into


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"  # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "pcaps", "build", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-w", str(base / "dist"), str(source)], cwd=base)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (base / "dist").glob("*.whl")
    environment = base / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                cwd=base).stdout.strip()
    Path(site, "borrowed.pth").write_text(
        f"{_borrow(base / 'dependencies', pytest_asyncio=False)}\n")
    _borrow(base / "pytest-extra", pytest_asyncio=True)
    done = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                cwd=base)
    assert done.returncode == 0, done.stdout + done.stderr
    return environment / "bin"


def _with_pytest_extra(installed: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(installed.parent.parent / "pytest-extra")}


def test_console_script_runs_the_default_scenario_from_root(installed: Path,
                                                            tmp_path: Path) -> None:
    done = _run([str(installed / "mcx-emulator"), "run", "--scenario", "default", "-q",
                 "--pcaps", str(tmp_path)], cwd=Path("/"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout
    assert "site-packages" in _run([str(installed / "python"), "-c",
                                    "import emulator.topology as t; print(t.DEFAULT_TOPOLOGY)"],
                                   cwd=Path("/")).stdout


def test_outside_pytest_file_uses_the_installed_fixture(installed: Path,
                                                        tmp_path: Path) -> None:
    (tmp_path / "test_outside.py").write_text(textwrap.dedent(FIXTURE_TEST))
    done = _run([str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
                 str(tmp_path)], cwd=tmp_path, env=_with_pytest_extra(installed))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_without_pytest_asyncio_pytest_runs_and_the_fixture_says_why(installed: Path,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(textwrap.dedent(PLAIN_TEST))
    done = _run([str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 str(tmp_path)], cwd=tmp_path)
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    assert "mcx_network fixture needs pytest-asyncio" in done.stdout
