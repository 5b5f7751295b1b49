#!/usr/bin/env python3
"""An outside client of `run_topology.py up`: migrate a user by hand, then register with sipp.

    python scripts/outside_client.py STATE_FILE [--user alice] [--run-sipp]

Reads the state file that `up` wrote, then, over HTTPS with the published
CA certificates: logs in at the primary IdMS (auth code + PKCE), exchanges
the access token for a security token addressed to the partner IdMS
(RFC 8693), gets a partner access token from the partner IdMS (RFC 7523),
and attaches to the local PLMN gateway.  It prints the sipp command that
registers at the partner through the gateway with that token, and runs it
with --run-sipp.  Only the standard library and `requests` are used.

In netns placement it runs inside a UE's namespace (``run_topology.py exec ... UE --``)
and is that UE: with ``--ue UE`` it asks ``up`` (its control socket) for the radio
attach between the home steps and the visited ones, as a phone changes networks.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import re
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import requests

SCENARIO = Path(__file__).resolve().parent.parent / "tests" / "sipp" / "register_partner.xml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state_file")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--run-sipp", action="store_true")
    parser.add_argument("--ue", help="the UE whose namespace this runs in (netns placement)")
    args = parser.parse_args()
    state = json.loads(Path(args.state_file).read_text())
    user = state["users"][args.user]
    client = state["oidc_client"]
    nodes = state["nodes"]
    primary = nodes[f"{user['system']}.idms"]["http"]
    gateway = next(n for n in nodes.values() if n["role"] == "gateway")
    served = next(name.split(".")[0] for name, n in nodes.items()
                  if n["role"] == "idms" and name.split(".")[0] != user["system"])
    partner = nodes[f"{served}.idms"]["http"]
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as bundle:
        for path in state["ca_certs"].values():
            bundle.write(Path(path).read_text())
    session = requests.Session()
    # Per-request verify=: a Session-level verify is overridden by REQUESTS_CA_BUNDLE
    # or CURL_CA_BUNDLE when those are set in the environment.
    session.trust_env = False
    session.verify = bundle.name

    # 1. OIDC login at the primary IdMS: authorization code with PKCE S256 (33.180 B.4).
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": client["client_id"],
             "redirect_uri": client["redirect_uri"], "state": secrets.token_urlsafe(8),
             "scope": "openid 3gpp:mc:ptt_service", "code_challenge": challenge,
             "code_challenge_method": "S256", "acr_values": "3gpp:acr:password"}
    form = session.get(f"{primary}/authorize", params=query, timeout=10)
    form.raise_for_status()
    fields = {html.unescape(k): html.unescape(v) for k, v in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.text)}
    fields.update(username=user["username"], password=user["password"])
    answer = session.post(f"{primary}/authorize", data=fields, allow_redirects=False, timeout=10)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
        answer.headers["Location"]).query))["code"]
    tokens = session.post(f"{primary}/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "client_id": client["client_id"],
        "redirect_uri": client["redirect_uri"], "code_verifier": verifier}).json()
    print(f"1. logged in at {primary}: access token of {len(tokens['access_token'])} bytes")

    # 2. RFC 8693 token exchange at the primary: a security token for the partner IdMS.
    exchanged = session.post(f"{primary}/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": tokens["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "resource": partner, "client_id": client["client_id"]}).json()
    print(f"2. security token for {partner} ({exchanged.get('issued_token_type')})")

    # 3. Attach to the local PLMN (in netns placement the radio moves the UE there first).
    if args.ue:
        moved = _control(state["control"], {"radio_attach": args.ue})
        print(f"3. radio attach of {args.ue}: {moved or 'no namespace to move'}")
    attach = session.post(f"{gateway['http']}/attach", json={"ue": args.ue or "outside-client"},
                          timeout=10).json()
    print(f"3. attached: address {attach['ue_address']}")

    # 4. RFC 7523 at the partner IdMS, from the local PLMN: the partner access token.
    partner_tokens = session.post(f"{partner}/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": exchanged["access_token"], "client_id": client["client_id"]}).json()
    if "access_token" not in partner_tokens:
        print(f"partner IdMS refused: {partner_tokens}", file=sys.stderr)
        return 1
    print("4. partner access token received")

    # 5. REGISTER through the gateway with sipp.
    sip = next(s for s in gateway["sip"] if s["transport"] == "udp")
    impu = user["partner_identity"]
    domain = impu.split("@", 1)[1]
    command = ["sipp", "-sf", str(SCENARIO), f"{sip['host']}:{sip['port']}", "-i",
               attach["ue_address"], "-p", "5070", "-m", "1", "-nostdin",
               "-key", "impu", impu, "-key", "domain", domain,
               "-key", "token", partner_tokens["access_token"],
               "-key", "client_id", client["client_id"]]
    print("5. " + " ".join(shlex.quote(c) for c in command))
    if args.run_sipp:
        return subprocess.run(command, stdout=subprocess.DEVNULL, timeout=60).returncode
    return 0


def _control(path: str, request: dict[str, object]) -> str:
    """One request on up's control socket (a Unix socket: reachable from any namespace)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(path)
        control.sendall((json.dumps(request) + "\n").encode())
        answer = json.loads(control.makefile().readline())
    if "error" in answer:
        raise SystemExit(f"up refused {request}: {answer['error']}")
    return str(answer["ok"])


if __name__ == "__main__":
    sys.exit(main())
