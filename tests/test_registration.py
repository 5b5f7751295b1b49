"""RFC 3261 §10.3 registrar behaviour (emulator/sip/registrar.py), in simulated time."""

from __future__ import annotations

from emulator.sip import LocationService
from emulator.sip import Registered
from emulator.sip import RegistrarPolicy
from emulator.sip import Request
from emulator.sip import Response
from emulator.sip import parse_message
from emulator.sip import process_register
from emulator.sip import registered_response

DOMAIN = "mcx.partner.example"


def register(contact: str = "<sip:ue@127.0.31.1:5060>", *, call_id: str = "c1", cseq: int = 1,
             expires: str | None = "600", extra: str = "") -> Request:
    lines = [f"REGISTER sip:{DOMAIN} SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.31.1:5060;branch=z9hG4bK-1",
             f"From: <sip:alice@{DOMAIN}>;tag=a", f"To: <sip:alice@{DOMAIN}>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER"]
    if contact:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def run(location: LocationService, request: Request, now: float = 1000.0
        ) -> Registered | Response:
    return process_register(request, domains={DOMAIN}, location=location, now=now, to_tag="t")


def test_binding_refresh_and_200_listing_all_bindings() -> None:
    location = LocationService()
    first = run(location, register())
    assert isinstance(first, Registered) and first.changed
    second = run(location, register("<sip:ue@127.0.31.2:5060>", call_id="c2"))
    assert isinstance(second, Registered)
    response = registered_response(register(), second, now=1000.0, to_tag="t")
    contacts = sorted(str(c.uri) for c in response.contacts)
    assert contacts == ["sip:ue@127.0.31.1:5060", "sip:ue@127.0.31.2:5060"]  # §10.3 step 8
    assert all(c.expires == 600 for c in response.contacts)


def test_interval_too_brief_gets_423_with_min_expires() -> None:
    location = LocationService(RegistrarPolicy(min_expires=60))
    refused = run(location, register(expires="30"))
    assert isinstance(refused, Response) and refused.status == 423
    assert refused.headers.get("Min-Expires") == "60"
    assert len(location) == 0


def test_contact_expires_parameter_beats_the_header_and_is_capped() -> None:
    location = LocationService(RegistrarPolicy(max_expires=7200))
    outcome = run(location, register("<sip:ue@127.0.31.1>;expires=100000", expires="60"))
    assert isinstance(outcome, Registered)
    assert outcome.bindings[0].remaining(1000.0) == 7200


def test_wildcard_removes_every_binding_only_with_expires_zero() -> None:
    location = LocationService()
    run(location, register())
    run(location, register("<sip:ue@127.0.31.2>", call_id="c2"))
    bad = run(location, register("*", cseq=2, expires="600"))
    assert isinstance(bad, Response) and bad.status == 400
    removed = run(location, register("*", cseq=2, expires="0"))
    assert isinstance(removed, Registered) and removed.bindings == []
    assert len(location) == 0


def test_cseq_must_grow_within_a_call_id() -> None:
    location = LocationService()
    run(location, register(cseq=5))
    stale = run(location, register(cseq=5))
    assert isinstance(stale, Response) and stale.status == 500
    newer = run(location, register(cseq=6, expires="300"))
    assert isinstance(newer, Registered) and newer.bindings[0].remaining(1000.0) == 300


def test_another_call_id_replaces_the_binding() -> None:
    location = LocationService()
    run(location, register(cseq=9))
    replaced = run(location, register(call_id="new", cseq=1, expires="120"))
    assert isinstance(replaced, Registered) and len(replaced.bindings) == 1
    assert replaced.bindings[0].call_id == "new"


def test_a_contact_is_matched_by_its_uri_and_the_others_stay_as_they_were() -> None:
    """§10.3 step 7 with §19.1.4: a refresh finds its binding by URI comparison (host case
    does not count), replaces only it, and the AOR's other bindings stay, in order."""
    location = LocationService()
    run(location, register("<sip:ue@Phone.Example>", call_id="c1"))
    run(location, register("<sip:ue@127.0.31.2:5060>", call_id="c2"))
    refreshed = run(location, register("<sip:ue@phone.example>;expires=300", call_id="c1",
                                       cseq=2), now=1010.0)
    assert isinstance(refreshed, Registered)
    assert [(b.contact_text, b.cseq, b.expires_at) for b in refreshed.bindings] == [
        ("<sip:ue@phone.example>;expires=300", 2, 1310.0),
        ("<sip:ue@127.0.31.2:5060>", 1, 1600.0)]
    removed = run(location, register("<sip:ue@PHONE.example>", call_id="c1", cseq=3,
                                     expires="0"), now=1020.0)
    assert isinstance(removed, Registered) and removed.changed
    assert [b.call_id for b in location.lookup(f"sip:alice@{DOMAIN}", now=1020.0)] == ["c2"]
    assert [b.call_id for b in removed.previous] == ["c1", "c2"]  # what to roll back to


def test_a_registration_rolled_back_is_what_was_bound_before() -> None:
    """The SIP core puts back what a REGISTER replaced when the MC server refuses it."""
    location = LocationService()
    first = run(location, register(call_id="c1"))
    assert isinstance(first, Registered) and first.previous == ()
    second = run(location, register("<sip:ue@127.0.31.9:5060>", call_id="c9"))
    assert isinstance(second, Registered)
    location.restore(second.aor, second.previous)
    assert [b.call_id for b in location.lookup(second.aor, now=1000.0)] == ["c1"]
    location.restore(second.aor, ())
    assert location.aors() == [] and len(location) == 0


def test_bindings_behind_one_proxy_share_their_path_vector() -> None:
    """Every UE behind one P-CSCF has the same Path: the registrar keeps one copy of it, not
    one per user (memory per registered UE, benchmarks/scale.py); a long made-up vector is
    stored all the same, but not kept for sharing."""
    location = LocationService()
    extra = "Supported: path\r\nPath: <sip:term@127.0.30.1:5060;lr>"
    kept = []
    for user in ("alice", "bob"):
        request = parse_message(bytes(register(extra=extra)).replace(b"alice", user.encode()))
        assert isinstance(request, Request)
        outcome = run(location, request)
        assert isinstance(outcome, Registered)
        kept.append(outcome.bindings[0].path)
    assert kept[0] == ("<sip:term@127.0.30.1:5060;lr>",) and kept[0] is kept[1]
    long_path = f"Supported: path\r\nPath: <sip:{'x' * 2000}@127.0.30.1;lr>"
    paths = []
    for user in ("carol", "dave"):
        request = parse_message(bytes(register(extra=long_path)).replace(b"alice",
                                                                         user.encode()))
        assert isinstance(request, Request)
        outcome = run(location, request)
        assert isinstance(outcome, Registered)
        paths.append(outcome.bindings[0].path)
    assert paths[0] == paths[1] and paths[0] is not paths[1]


def test_made_up_path_vectors_do_not_end_the_sharing() -> None:
    """A peer sending many distinct short vectors fills the sharing table; the common
    vector is shared again from its next use (the table starts over), not refused."""
    from emulator.sip.headers import shared_strings
    common = ("<sip:term@127.0.30.1:5060;lr>",)
    for n in range(1000):
        shared_strings((f"<sip:forged{n}@198.18.0.1;lr>",))
    first = shared_strings(list(common))
    assert first == common and shared_strings(list(common)) is first


def test_bindings_expire_with_time() -> None:
    location = LocationService()
    run(location, register(expires="100"), now=0.0)
    assert location.lookup(f"sip:alice@{DOMAIN}", now=99.0)
    assert location.lookup(f"sip:alice@{DOMAIN}", now=101.0) == []


def test_path_is_stored_and_echoed() -> None:
    location = LocationService()
    request = register(extra="Supported: path\r\nPath: <sip:term@127.0.30.1:5060;lr>")
    outcome = run(location, request)
    assert isinstance(outcome, Registered)
    assert outcome.bindings[0].path == ("<sip:term@127.0.30.1:5060;lr>",)
    response = registered_response(request, outcome, now=1000.0, to_tag="t")
    assert response.headers.get_all("Path") == ["<sip:term@127.0.30.1:5060;lr>"]


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    location = LocationService()
    run(location, register())
    query = run(location, register(contact="", cseq=2))
    assert isinstance(query, Registered) and not query.changed
    assert len(query.bindings) == 1


def test_unsupported_require_and_foreign_domain_are_refused() -> None:
    location = LocationService()
    refused = run(location, register(extra="Require: sec-agree"))
    assert isinstance(refused, Response) and refused.status == 420
    assert refused.headers.get("Unsupported") == "sec-agree"
    foreign = process_register(register(), domains={"other.example"}, location=location,
                               now=0.0, to_tag="t")
    assert isinstance(foreign, Response) and foreign.status == 404


def test_expired_registrations_are_purged_and_named() -> None:
    """An AOR whose last binding ran out leaves the table at the next purge, which says
    what it had (for its reg-event subscribers); a live one stays."""
    location = LocationService()
    run(location, register(expires="100"), now=0.0)
    bob = parse_message(bytes(register(expires="900")).replace(b"alice", b"bob"))
    assert isinstance(bob, Request)
    run(location, bob, now=0.0)
    assert location.purge(50.0) == []
    ((aor, bindings),) = location.purge(101.0)
    assert aor == f"sip:alice@{DOMAIN}" and len(bindings) == 1
    assert location.aors() == [f"sip:bob@{DOMAIN}"]


def test_a_full_location_table_answers_503_with_retry_after() -> None:
    location = LocationService(RegistrarPolicy(max_aors=1))
    assert isinstance(run(location, register()), Registered)
    other = parse_message(bytes(register()).replace(b"alice", b"carol"))
    assert isinstance(other, Request)
    refused = run(location, other)
    assert isinstance(refused, Response) and refused.status == 503
    assert refused.headers.get("Retry-After") == "60"
    assert location.aors() == [f"sip:alice@{DOMAIN}"]
    # The registered user still refreshes: an existing AOR always fits.
    assert isinstance(run(location, register(cseq=2), now=1010.0), Registered)


def test_one_address_of_record_holds_a_bounded_number_of_contacts() -> None:
    location = LocationService(RegistrarPolicy(max_bindings=2))
    for n in (1, 2):
        accepted = run(location, register(f"<sip:ue@127.0.31.{n}:5060>", call_id=f"c{n}"))
        assert isinstance(accepted, Registered)
    refused = run(location, register("<sip:ue@127.0.31.3:5060>", call_id="c3"))
    assert isinstance(refused, Response) and refused.status == 403
    assert len(location) == 2  # the refused REGISTER changed nothing


def test_a_binding_writes_its_contact_as_parsing_it_again_would() -> None:
    """The journal keeps ``contact_text`` (no parse, no rewrite): it must be what the bound
    Contact writes out, parameters, display name and instance included."""
    location = LocationService()
    outcome = run(location, register(
        '"Alice UE" <sip:ue@127.0.31.1:5060;transport=udp>;expires=300'
        ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>";q=0.7'))
    assert isinstance(outcome, Registered)
    for binding in outcome.bindings:
        assert binding.contact_text == str(binding.contact)
