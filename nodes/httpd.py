"""The HTTPS server every HTTP node (IdMS, CMS, gateway) runs on: aiohttp over TLS.

Small on purpose: bind, serve an ``aiohttp.web.Application``, stop cleanly.
Request bodies are capped (a token request never needs more than a few kB),
and unexpected handler errors become a JSON 500 instead of a stack trace.
:class:`HttpsRole` is the whole life of a role that only speaks HTTPS.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable
from collections.abc import Callable

from aiohttp import web

from emulator.topology.model import ConnectionLimits
from emulator.transport.guard import DEFAULT_CONNECTION_LIMITS
from emulator.transport.guard import ListenerGuard

from .base import Readiness
from .base import describe
from .base import tls_server
from .plan import NodePlan

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_HEADER_BYTES = 20 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "server_error",
                                  "error_description": "internal error"}, status=500)


def new_application() -> web.Application:
    return web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_errors])


def json_response(body: object, status: int = 200, **headers: str) -> web.Response:
    """JSON with ``Cache-Control: no-store`` (RFC 6749 §5.1 for anything carrying tokens)."""
    return web.Response(text=json.dumps(body), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **headers})


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ListenerGuard` (TLS under it)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 guard: ListenerGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.guard = guard

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await self.guard.listen(self._host, self._port)

    async def stop(self) -> None:
        self.guard.close()
        await super().stop()


class HttpsServer:
    """Serves ``app`` on ``host:port`` with ``ssl_context``; ``url`` once started.

    Every connection is guarded (``emulator.transport.guard``): caps, and a request
    must be complete within the header timeout (aiohttp has no such timer of its own,
    so a slow sender could hold a connection for ever)."""

    def __init__(self, name: str, app: web.Application, host: str, port: int,
                 ssl_context: ssl.SSLContext | None,
                 limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.limits = limits
        self._runner: web.AppRunner | None = None
        self.guard: ListenerGuard | None = None
        app.on_response_prepare.append(self._answering)

    async def _answering(self, request: web.Request, response: web.StreamResponse) -> None:
        """A response starts: its request was complete (the guard's header timer stops)."""
        if self.guard is not None and request.transport is not None:
            connection = self.guard.serving.get(request.transport)
            if connection is not None:
                connection.mark(busy=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> str:
        # Header lines up to 20 kB: a 16 kB bearer token (the validator's cap) must reach
        # the validator and get an RFC 6750 answer, not aiohttp's plain 400 at 8 kB.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     max_line_size=MAX_HEADER_BYTES,
                                     max_field_size=MAX_HEADER_BYTES)
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None
        self.guard = ListenerGuard(f"https {self.host}:{self.port}", self.limits,
                                   lambda _: handler(), ssl_context=self.ssl_context)
        site = _GuardedSite(self._runner, self.host, self.port, self.guard)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self.guard.name = f"https {self.host}:{self.port}"
        return self.url

    def guard_state(self) -> dict[str, object]:
        """Connections held and refused, by reason (see ``ListenerGuard.state``)."""
        return self.guard.state() if self.guard is not None else {}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class HttpsRole(Readiness):
    """A role serving ``app`` on its plan's https listener (the IdMS, the CMS)."""

    def __init__(self, plan: NodePlan, app: web.Application) -> None:
        super().__init__()
        https = plan.listener("https")
        if https is None:
            raise ValueError(f"{plan.name}: a {plan.role} needs an https listener")
        self.plan = plan
        self.name = plan.name
        self.server = HttpsServer(plan.name, app, https.host, https.port,
                                  tls_server(plan.credentials), plan.connection_limits)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.server.url}>"

    async def start(self) -> None:
        await self.server.start()
        self._mark_ready()

    async def stop(self) -> None:
        await self.server.stop()

    def state(self) -> dict[str, object]:
        return {**describe(self.plan, [("https", self.server.host, self.server.port)]),
                "guards": {"https": self.server.guard_state()}}
