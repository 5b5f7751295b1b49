"""Installed as a wheel, the emulator works away from the checkout.

The wheel is built from this tree and installed (not editable) into a fresh
virtual environment.  Its third-party dependencies are borrowed from the
test environment through a path file, so the test needs no download; the
project itself comes only from the wheel.  Then, from ``/``:

* ``mcx-emulator run --scenario default -q`` finds its shipped topology and
  exits 0;
* a pytest file outside the repository uses the ``mcx_network`` fixture of
  the installed plugin.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

OUTSIDE_TEST = '''
async def test_fixture_from_the_installed_plugin(mcx_network):
    import emulator
    assert "site-packages" in emulator.__file__          # the wheel, not the checkout
    state = mcx_network.state()
    assert state["nodes"]["partner.sip-core"]["sip"][0]["port"] == 5060
    tokens = await mcx_network.ues["ue-alice"].login(
        mcx_network.topology.system("primary").issuer)
    assert tokens.access_token
'''


def _run(command: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True,  # type: ignore[call-overload]
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("install")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-w", str(base / "dist"), str(ROOT)], cwd=base)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (base / "dist").glob("*.whl")
    environment = base / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                cwd=base).stdout.strip()
    # Dependencies only: a plain path line does not run the test venv's own .pth files,
    # so its editable install of this project stays out.
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                cwd=base)
    assert done.returncode == 0, done.stdout + done.stderr
    return environment / "bin"


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
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "test_outside.py").write_text(textwrap.dedent(OUTSIDE_TEST))
    done = _run([str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
                 str(outside)], cwd=outside)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
