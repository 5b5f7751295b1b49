"""The one way a step of the emulator says no: :class:`Refusal`.

An IdMS refusing a grant (RFC 6749 §5.2), a CMS refusing a bearer token
(RFC 6750 §3), the UE's IdM client reporting either, and a scenario step
refused by a SIP response all carry the same three things: a status, an
error code and a description.
"""

from __future__ import annotations


class Refusal(Exception):
    """Refused: ``status`` (HTTP or SIP), ``error`` and ``description``.

    For OAuth, ``error`` is the RFC 6749 §5.2 code and ``status`` the HTTP
    status.  For SIP, ``status`` is the response code, ``error`` its Warning
    text (24.379 §4.4) and ``description`` its reason phrase.
    """

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        """The RFC 6749 §5.2 error body."""
        return {"error": self.error, "error_description": self.description}
