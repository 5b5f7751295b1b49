"""Calling a node in another process: typed JSON over its control link.

A request is ``{"id": n, "call": "<method>", "args": {...}}``; the answer is
``{"id": n, "result": ..., "state": {...}}``, or ``"refusal"`` (a
:class:`~emulator.refusal.Refusal`'s error, description and status), or
``"error"``.  Arguments and results are converted by the called method's own
type hints, on both sides, so a caller gets the dataclasses it would get in
process.  Every answer carries the node's state, which keeps the supervisor's
view of the node current.  Only the methods a role lists in ``REMOTE_CALLS``
(and ``state``, and ``memory``: :func:`emulator.process.memory`) can be called.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import cattrs

from emulator import process
from emulator.refusal import Refusal
from emulator.sip.events import Address
from nodes import Node

CONVERTER = cattrs.Converter()
CONVERTER.register_unstructure_hook(Address, lambda a: [a.transport, a.host, a.port])
CONVERTER.register_structure_hook(Address, lambda value, _: Address(*value))
# `object` (as in dict[str, object]) is JSON as it came; only that exact type, not subclasses.
CONVERTER.register_structure_hook_func(lambda kind: kind is object, lambda value, _: value)


class RemoteError(RuntimeError):
    """The node failed on a call, other than by refusing."""


def allowed(node: object) -> frozenset[str]:
    calls: frozenset[str] = getattr(node, "REMOTE_CALLS", frozenset())
    return calls | {"state", "memory"}


def _hints(method: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(method)


def encode_args(method: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> dict[str, Any]:
    """The caller's arguments, by name, as JSON data (``method`` is the node's method)."""
    bound = inspect.signature(method).bind(None, *args, **kwargs)
    hints = _hints(method)
    return {name: CONVERTER.unstructure(value, hints.get(name, Any))
            for name, value in bound.arguments.items() if name != "self"}


async def serve_call(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    """Run one request on ``node`` (in the node's process) and build its answer."""
    answer: dict[str, Any] = {"id": request.get("id")}
    name = request.get("call")
    if name not in allowed(node):
        answer["error"] = f"no remote call {name!r}"
        return answer
    if name == "memory":  # the node's process, whatever its role (benchmarks/scale.py)
        census = (request.get("args") or {}).get("census", 0)
        answer["result"] = process.memory(census=census if isinstance(census, int) else 0)
        answer["state"] = node.state()
        return answer
    method = getattr(node, name)
    try:
        hints = _hints(method)
        args = {key: CONVERTER.structure(value, hints[key])
                for key, value in dict(request.get("args") or {}).items()}
        result = method(**args)
        if inspect.isawaitable(result):
            result = await result
        answer["result"] = CONVERTER.unstructure(result, hints.get("return", Any))
    except Refusal as refusal:
        answer["refusal"] = [refusal.error, refusal.description, refusal.status]
    except Exception as exc:  # reported to the caller; the node serves on
        answer["error"] = f"{type(exc).__name__}: {exc}"
    answer["state"] = node.state()
    return answer


def decode_answer(method: Callable[..., Any], answer: dict[str, Any]) -> Any:
    """The result the caller would have got in process; raises what the node raised."""
    if "refusal" in answer:
        error, description, status = answer["refusal"]
        raise Refusal(error, description, status)
    if "error" in answer:
        raise RemoteError(answer["error"])
    return CONVERTER.structure(answer.get("result"), _hints(method).get("return", Any))
