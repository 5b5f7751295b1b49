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


class HttpsServer:
    """Serves ``app`` on ``host:port`` with ``ssl_context``; ``url`` once started."""

    def __init__(self, name: str, app: web.Application, host: str, port: int,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None

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
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context,
                           reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.url

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
                                  tls_server(plan.credentials))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.server.url}>"

    async def start(self) -> None:
        await self.server.start()
        self._mark_ready()

    async def stop(self) -> None:
        await self.server.stop()

    def state(self) -> dict[str, object]:
        return describe(self.plan, [("https", self.server.host, self.server.port)])
