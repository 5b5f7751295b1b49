"""The configuration management server (CMS) over HTTPS (24.484, 23.280 §10.1.4).

Serves MC service user profiles at their XCAP path
``/org.3gpp.mcptt.user-profile/users/{XUI}/mcptt-user-profile-{index}.xml``
to a client presenting a bearer access token (RFC 6750 §2.1) from its own
system's IdMS.  The token must carry the config-management scope
(33.180 B.4) and a ``mcptt_id`` equal to the XUI: users read only their
own profile.  Refusals follow RFC 6750 §3 (``WWW-Authenticate: Bearer
error=...``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from emulator.documents import profile as profiles

from .base import own_token_validator
from .bearer import BearerGuard
from .bearer import BearerRefused
from .httpd import HttpsRole
from .httpd import json_response
from .httpd import new_application
from .plan import CmsOptions
from .plan import NodePlan

logger = logging.getLogger(__name__)

CONFIG_SCOPE = "3gpp:mc:ptt_config_management_service"


class CmsNode(HttpsRole):
    """A CMS holding its plan's profiles, keyed by MCPTT ID (the XUI)."""

    def __init__(self, plan: NodePlan) -> None:
        options = plan.options
        assert isinstance(options, CmsOptions)
        self.profiles = {p.xui_uri: p for p in options.profiles}
        self.guard = BearerGuard(own_token_validator(options.issuer, plan.credentials),
                                 options.issuer, options.audience, CONFIG_SCOPE)
        self.requests = 0
        app = new_application()
        app.router.add_get(profiles.xcap_path("{xui}", "{index}"), self._get)
        super().__init__(plan, app)

    def state(self) -> dict[str, object]:
        return {**super().state(), "profiles": len(self.profiles), "requests": self.requests}

    async def _get(self, request: web.Request) -> web.Response:
        self.requests += 1
        xui = request.match_info["xui"]
        try:
            if self.guard.claims(request).get("mcptt_id") != xui:
                raise BearerRefused(403, "insufficient_scope",
                                    "a user may only read their own profile")
        except BearerRefused as refused:
            return refused.response()
        profile = self.profiles.get(xui)
        if profile is None or str(profile.index) != request.match_info["index"]:
            return json_response({"error": "not_found",
                                  "error_description": f"no profile for {xui}"}, 404)
        return web.Response(body=profiles.render(profile), content_type=profiles.MIME_TYPE,
                            headers={"Cache-Control": "no-store"})
