"""The group management server (GMS) over HTTPS (24.481; 23.280 §10.1.5.2, §10.16.2).

Serves MC service group documents at their XCAP path
(``/org.openmobilealliance.groups/global/byGroupID/{group ID}``) to a client
presenting a bearer access token (RFC 6750 §2.1) from its own system's IdMS
with the group-management scope (33.180 B.4) whose ``mcptt_id`` is a member
of the group: a migrated user, holding a partner token, reads the partner
groups it may join.  Refusals follow RFC 6750 §3, as at the CMS.
"""

from __future__ import annotations

import logging

from aiohttp import web

from emulator.documents import groups

from .base import own_token_validator
from .bearer import BearerGuard
from .bearer import BearerRefused
from .httpd import HttpsRole
from .httpd import json_response
from .httpd import new_application
from .plan import GmsOptions
from .plan import NodePlan

logger = logging.getLogger(__name__)

GROUP_SCOPE = "3gpp:mc:ptt_group_management_service"


class GmsNode(HttpsRole):
    """A GMS holding its plan's group documents, keyed by group ID."""

    def __init__(self, plan: NodePlan) -> None:
        options = plan.options
        assert isinstance(options, GmsOptions)
        self.groups = {g.group_id: g for g in options.groups}
        self.guard = BearerGuard(own_token_validator(options.issuer, plan.credentials),
                                 options.issuer, options.audience, GROUP_SCOPE)
        self.requests = 0
        app = new_application()
        app.router.add_get(groups.xcap_path("{group}"), self._get)
        super().__init__(plan, app)

    def state(self) -> dict[str, object]:
        return {**super().state(), "groups": len(self.groups), "requests": self.requests}

    async def _get(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            claims = self.guard.claims(request)
        except BearerRefused as refused:
            return refused.response()
        group = self.groups.get(request.match_info["group"])
        if group is None:
            return json_response({"error": "not_found", "error_description":
                                  f"no group {request.match_info['group']}"}, 404)
        if claims.get("mcptt_id") not in group.members:
            return BearerRefused(403, "insufficient_scope",
                                 "not a member of this group").response()
        return web.Response(body=groups.render(group), content_type=groups.MIME_TYPE,
                            headers={"Cache-Control": "no-store"})
