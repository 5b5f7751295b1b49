"""`run_topology.py up` as a test starts it: in its own process, until it says it is ready."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def running_up(tmp_path: Path, *options: str, stop_timeout: float = 60
               ) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any], Path]]:
    """Start ``up`` with ``options``; yield it, its state and the state file once ready.

    The caller ends it (SIGINT, or SIGKILL for a crash); leaving the block sends SIGINT if
    it has not, and waits ``stop_timeout`` seconds for it (a big capture takes a while to
    publish).
    """
    state_file = tmp_path / "state.json"
    with subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "up", *options,
                           "--state-file", str(state_file), "--pcaps", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as up:
        assert up.stdout is not None
        output: deque[bytes] = deque(maxlen=200)
        for raw in up.stdout:
            output.append(raw)
            if raw.startswith(b"ready:"):
                break
        else:
            raise AssertionError(f"up exited before it was ready ({up.wait()}): "
                                 + b"".join(output).decode(errors="replace"))
        # Keep reading what it says: a full pipe would block it mid-log (under a flood,
        # asyncio logs every failed accept).
        drain = threading.Thread(target=output.extend, args=(up.stdout,), daemon=True)
        drain.start()
        try:
            yield up, json.loads(state_file.read_text()), state_file
        finally:
            if up.poll() is None:
                up.send_signal(2)
            up.wait(timeout=stop_timeout)
            drain.join(timeout=stop_timeout)
