"""Password guessing at a running IdMS, over HTTPS: failures slow down, then lock the
user out; during the lockout even the right password gets OAuth ``access_denied``; the
lockout is logged; after it, the right password works again.  The lockout's end comes
by simulated time (the IdMS's clock offset), not by waiting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emulator.refusal import Refusal
from emulator.topology.model import LoginLimit
from emulator.transport import client_context
from nodes.idm_client import IdmClient
from tests.support.identity import CLIENT_ID
from tests.support.identity import PARTNER_ISSUER
from tests.support.identity import REDIRECT_URI
from tests.support.identity import two_systems

LIMIT = LoginLimit(max_failures=3, window=300.0, lockout=60.0, slowdown=0.01)


async def test_guessing_a_password_locks_the_user_out_for_a_while(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with two_systems(tmp_path, login=LIMIT) as systems:
        cas = [systems.primary.material.ca.certificate_pem(),
               systems.partner.material.ca.certificate_pem()]
        guesser = IdmClient(CLIENT_ID, REDIRECT_URI, client_context(cas),
                            local_address="127.0.60.66")
        owner = IdmClient(CLIENT_ID, REDIRECT_URI, client_context(cas),
                          local_address="127.0.60.1")
        async with guesser, owner:
            with caplog.at_level(logging.WARNING, logger="nodes.idms"):
                for guess in ("123456", "password"):
                    with pytest.raises(Refusal) as wrong:
                        await guesser.login(PARTNER_ISSUER, "carol", guess)
                    assert wrong.value.status == 401  # the login page again, with its error
                with pytest.raises(Refusal) as third:
                    await guesser.login(PARTNER_ISSUER, "carol", "qwerty")
            assert third.value.status == 401
            # Both the user and the guessing address (3 failures each) are locked out.
            assert [r.getMessage() for r in caplog.records
                    if "locked out" in r.getMessage()] == [
                "partner.idms: user:carol locked out for 60 s after 3 failed logins",
                "partner.idms: source:127.0.60.66 locked out for 60 s after 3 failed logins"]
            # Locked: the right password, even from another address, is access_denied.
            with pytest.raises(Refusal) as locked:
                await owner.login(PARTNER_ISSUER, "carol", "carol-secret")
            assert locked.value.error == "access_denied"
            assert "locked out, retry in" in locked.value.description
            assert systems.partner.idms.state()["lockouts"] == 2
            # The lockout over (61 s on the IdMS's clock), the right password works again.
            systems.partner.idms.clock_offset += 61
            tokens = await owner.login(PARTNER_ISSUER, "carol", "carol-secret")
            assert tokens.access_token
