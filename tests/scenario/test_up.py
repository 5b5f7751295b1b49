"""`run_topology.py up`: an outside client migrates a user with its own tools (HTTP + sipp),
and the run ends cleanly on SIGINT with captures tshark can read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.capture.tshark import PREFERENCES

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed")


def _wait_ready(path: Path, process: subprocess.Popen[bytes]) -> dict:  # type: ignore[type-arg]
    """`up` prints "ready:" once the state file is written."""
    assert process.stdout is not None
    for raw in process.stdout:
        if raw.startswith(b"ready:"):
            return json.loads(path.read_text())
    raise AssertionError(f"up exited before it was ready (exit {process.wait()})")


def test_outside_client_migrates_with_sipp_and_sigint_finalises_captures(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text("stale from an earlier run")  # must not block the new run
    up = subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "up",
                           "--state-file", str(state_file), "--pcaps", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        state = _wait_ready(state_file, up)
        assert set(state) == {"nodes", "users", "oidc_client", "ca_certs", "pcap_dir",
                              "control"}
        assert state["nodes"]["primary.idms"]["http"] == "https://127.0.10.4:9443"
        client = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "outside_client.py"), str(state_file),
             "--run-sipp"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert client.returncode == 0, client.stdout + client.stderr
        assert "4. partner access token received" in client.stdout
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=30)[0].decode()
    assert up.returncode == 0, output
    assert "captures finalised" in output
    assert not state_file.exists()
    captures = sorted(Path(state["pcap_dir"]).glob("**/*.pcapng"))
    if not (os.geteuid() == 0 and shutil.which("tcpdump") and shutil.which("tshark")):
        pytest.skip("the capture's half needs root, tcpdump and tshark")
    assert captures
    for capture in captures:
        read = subprocess.run(["tshark", "-r", str(capture), *PREFERENCES, "-Y",
                               "_ws.malformed || _ws.expert.severity >= warning"],
                              capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == ""
    # sipp's REGISTER went through the gateway, and the partner's 200 came back.
    merged = Path(state["pcap_dir"]) / "capture.pcapng"
    sip = subprocess.run(["tshark", "-r", str(merged), "-Y", "sip.CSeq.method == REGISTER",
                          "-T", "fields", "-e", "sip.Status-Code", "-e", "ip.src"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "200\t127.0.30.1" in sip
