"""The poc-settings body of the service authorisation PUBLISH (RFC 4354; 24.379 §7.2.2)."""

from __future__ import annotations

import pytest

from emulator.documents import XmlError
from emulator.documents import poc_settings
from emulator.documents.poc_settings import PocSettings

CLIENT = "urn:uuid:00000000-0000-1000-8000-000000000001"


def document(entities: str, namespace: str = poc_settings.NAMESPACE) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<poc-settings xmlns="{namespace}" '
            f'xmlns:mcs10Set="{poc_settings.MCS_SETTINGS_NS}">{entities}</poc-settings>').encode()


def test_constants() -> None:
    assert poc_settings.MIME_TYPE == "application/poc-settings+xml"
    assert poc_settings.EVENT == "poc-settings"


@pytest.mark.parametrize("settings", [
    PocSettings(CLIENT, "automatic"),
    PocSettings(CLIENT, "manual", 1),
    PocSettings(CLIENT, None, 0),
    PocSettings(CLIENT, None),
], ids=["automatic", "manual-with-profile", "mcdata-profile-only", "empty"])
def test_round_trip(settings: PocSettings) -> None:
    assert poc_settings.parse(poc_settings.render(settings)) == settings


def test_the_mcop_publish_body_parses() -> None:
    """The body the MCOP client publishes (datatype/pocsettings), with all four RFC 4354 parts."""
    data = document(
        f'<entity id="{CLIENT}">'
        '<isb-settings><incoming-session-barring active="false"/></isb-settings>'
        "<am-settings><answer-mode>automatic</answer-mode></am-settings>"
        '<ipab-settings><incoming-personal-alert-barring active="false"/></ipab-settings>'
        '<sss-settings><simultaneous-sessions-support active="false"/></sss-settings>'
        "<mcs10Set:selected-user-profile-index><mcs10Set:user-profile-index>2"
        "</mcs10Set:user-profile-index></mcs10Set:selected-user-profile-index>"
        "<mcs10Set:multiplex-support>false</mcs10Set:multiplex-support></entity>")
    assert poc_settings.parse(data) == PocSettings(CLIENT, "automatic", 2)


@pytest.mark.parametrize("namespace", poc_settings.ACCEPTED_NAMESPACES)
def test_every_accepted_namespace_parses(namespace: str) -> None:
    data = document(f'<entity id="{CLIENT}"><am-settings><answer-mode>manual</answer-mode>'
                    "</am-settings></entity>", namespace)
    assert poc_settings.parse(data) == PocSettings(CLIENT, "manual")


def test_render_writes_the_mcop_namespace() -> None:
    data = poc_settings.render(PocSettings(CLIENT, "manual"))
    assert b'<poc-settings xmlns="urn:oma:params:xml:ns:poc:poc-settings">' in data
    assert b"mcs10Set" not in data


@pytest.mark.parametrize(("entities", "message"), [
    ("", "0 entities, expected exactly 1"),
    (f'<entity id="{CLIENT}"/><entity id="other"/>', "2 entities, expected exactly 1"),
    ("<entity/>", "lacks attribute id"),
    ('<entity id=" "/>', "entity id is empty"),
    (f'<entity id="{CLIENT}"><am-settings><answer-mode>sometimes</answer-mode></am-settings>'
     "</entity>", "answer-mode 'sometimes'"),
    (f'<entity id="{CLIENT}"><mcs10Set:selected-user-profile-index><mcs10Set:user-profile-index>'
     "-1</mcs10Set:user-profile-index></mcs10Set:selected-user-profile-index></entity>",
     "user-profile-index '-1'"),
    (f'<entity id="{CLIENT}"><mcs10Set:selected-user-profile-index><mcs10Set:user-profile-index>'
     "256</mcs10Set:user-profile-index></mcs10Set:selected-user-profile-index></entity>",
     "user-profile-index 256 is out of range"),
])
def test_invalid_documents_are_refused(entities: str, message: str) -> None:
    with pytest.raises(XmlError, match=message):
        poc_settings.parse(document(entities))


def test_render_refuses_bad_values() -> None:
    with pytest.raises(XmlError, match="answer-mode 'auto'"):
        poc_settings.render(PocSettings(CLIENT, "auto"))
    with pytest.raises(XmlError, match="entity id is empty"):
        poc_settings.render(PocSettings("", "manual"))


def test_many_entities_are_refused() -> None:
    many = '<entity id="c"/>' * 2000
    with pytest.raises(XmlError, match="2000 entities, expected exactly 1"):
        poc_settings.parse(document(many))
