"""The zygote: one process that has imported the roles, and forks a node process per plan.

An interpreter takes about half a second to import the roles (aiohttp,
cryptography, joserfc); forked from a process that already has, a node
serves in tens of milliseconds.  The supervisor starts one zygote per run::

    python -m emulator.orchestration.zygote CONTROL_SOCKET [TITLE]

and talks to it in JSON lines.  Where no event loop and no other thread exists yet
(the command line, before it starts the network), :func:`fork` makes the zygote a
fork of the calling process instead: it has imported the roles already, so it is
ready at once rather than half a second later.  Requests on its stdin (or the
fork's request pipe)::

    {"fork": "<node name>", "plan": {...NodePlan...}, "log": "<path>", "netns": null,
     "title": "mcx-<pid>-<run>-<node name>"}

(``netns`` names the network namespace the node process enters before it serves;
``title`` is its process name, with the run's prefix, as ``ps`` shows it.)

Replies on its stdout (or the fork's reply pipe)::

    {"ready": true}                              once the roles are imported
    {"started": "<name>", "pid": 1234}           after each fork
    {"exited": "<name>", "pid": 1234, "code": 0} when a node process ends (a
                                                 signal is a negative code)

A node process leaves the terminal's session (a Ctrl-C reaches the
supervisor only), writes its output to its log, serves its plan, and says it
serves by connecting to the supervisor's control socket and sending
``{"ready": "<name>", "state": {...}}``; that link stays open for its life,
carries the supervisor's calls (:mod:`.remote`), and its end tells the
supervisor at once that the node is gone.  Node
processes die with the zygote, and the zygote with the supervisor
(``PR_SET_PDEATHSIG``); the zygote also ends when its request pipe closes, after
sending SIGTERM to the node processes still alive.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import selectors
import signal
import sys
import threading
from typing import Any

from emulator.orchestration.serve import serve_plan
from emulator.process import die_with_parent
from emulator.process import enter_netns
from emulator.process import run
from emulator.process import set_title
from nodes import NodePlan
from nodes.plan import prepare_plans


def _node_process(name: str, plan: dict[str, Any], log_path: str, control: str,
                  netns: str | None, title: str | None) -> None:
    """In the forked child: detach, enter its namespace, redirect output, serve; never
    returns."""
    code = 1
    try:
        os.setsid()
        die_with_parent()
        if title:
            set_title(title)
        if netns is not None:
            enter_netns(netns)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = run(serve_plan(NodePlan.from_dict(plan), control))
    except BaseException as exc:  # everything ends here: the child must never return
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _say(replies: int, message: dict[str, Any]) -> None:
    os.write(replies, (json.dumps(message) + "\n").encode())


def _reap(replies: int, children: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        name = children.pop(pid, "?")
        _say(replies, {"exited": name, "pid": pid,
                       "code": os.waitstatus_to_exitcode(status)})


def main(control: str, title: str | None = None, requests: int = 0, replies: int = 1) -> int:
    """Serve fork requests read from ``requests`` (a descriptor), replying on ``replies``,
    until ``requests`` ends."""
    die_with_parent()
    if title:
        set_title(title)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through wake_w
    children: dict[int, str] = {}
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    # cattrs writes a class's structuring code on its first use: 15-50 ms in every child
    # that parses its plan, unless written here once, for all of them to inherit.
    prepare_plans()
    try:
        _say(replies, {"ready": True})
        _serve(selector, requests, replies, wake_r, control, children)
    except BrokenPipeError:  # the supervisor stopped listening: it is gone or done
        pass
    for pid in children:  # and so are we
        os.kill(pid, signal.SIGTERM)
    return 0


def _serve(selector: selectors.BaseSelector, requests: int, replies: int, wake_r: int,
           control: str, children: dict[int, str]) -> None:
    """Fork a node process per request until the requests end."""
    pending = b""  # read raw: a buffered readline() would hide a second request from select
    while True:
        for key, _ in selector.select():
            if key.fd != requests:
                os.read(wake_r, 512)
                continue
            data = os.read(requests, 1 << 20)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                request = json.loads(line)
                # What the zygote holds (the imported roles: most of a node's heap) moves to
                # the permanent generation: the child's collections never touch it, so its
                # pages stay shared instead of each node copying them at its first full
                # collection (~10 MB a node; Python's gc.freeze docs recommend it before fork).
                gc.freeze()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    _node_process(request["fork"], request["plan"], request["log"], control,
                                  request.get("netns"), request.get("title"))
                children[pid] = request["fork"]
                _say(replies, {"started": request["fork"], "pid": pid})
        _reap(replies, children)


def fork(control: str, title: str) -> tuple[int, int, int]:
    """The zygote as a fork of this process: ``(pid, request pipe, reply pipe)``.

    Only where nothing but the main thread runs and no event loop exists (a fork
    copies one thread: a lock another one held would stay held forever in the
    child, and a running loop would still look running there).
    """
    if threading.active_count() != 1 or _loop_running():
        raise RuntimeError("the zygote forks only before any thread or event loop exists")
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would write their buffers again
        stream.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(requests_w)
            os.close(replies_r)
            os.setsid()  # out of the terminal's session: a Ctrl-C reaches the supervisor only
            code = main(control, title, requests_r, replies_w)
        except BaseException as exc:  # the child must never return into the caller's code
            print(f"zygote: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    os.close(requests_r)
    os.close(replies_w)
    return pid, requests_w, replies_r


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
