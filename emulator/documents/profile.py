"""The MC service user profile document (TS 24.484 §8.3, XCAP; 23.280 §10.1.4).

The base elements follow the MCPTT user profile as deployed clients read it
(namespace ``urn:3gpp:mcptt:user-profile:1.0``, root ``mcptt-user-profile``
with ``XUI-URI`` and ``user-profile-index``; spec digest §5 [S]).

**Project-defined**: TS 24.484's element names for migration could not be
retrieved (spec digest §5, §8), so the migration data that 23.280 §10.1.4.1
and §10.1.6.1 say must exist lives in this project's own namespace
``urn:mcx-emulator:xml:ns:migration:1.0`` under ``<mig:MigrationInfo>``:
per partner MC system its identification and access information (local
PLMN and its attach gateway, partner SIP core address and domain, partner
IMPU/IMPI), its IdMS token endpoint and the ``aud``/``resource`` value for
token exchange (33.180 C.2 step 5), and whether the user is authorised to
migrate there.  The same document, issued by the partner's CMS with
``<mig:MigrationProfile primary-mcptt-id=...>``, is the partner's migration
profile for the user.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml

PROFILE_NS = "urn:3gpp:mcptt:user-profile:1.0"
MIGRATION_NS = "urn:mcx-emulator:xml:ns:migration:1.0"  # project-defined
MIME_TYPE = "application/vnd.3gpp.mcptt-user-profile+xml"
AUID = "org.3gpp.mcptt.user-profile"  # 24.484 XCAP application usage [S]

MAX_GROUPS = 256  # PROJECT-DEFINED bound

_P = f"{{{PROFILE_NS}}}"
_M = f"{{{MIGRATION_NS}}}"


@dataclass(frozen=True)
class PartnerSystem:
    """Connectivity and authorisation for one partner MC system (project-defined elements)."""

    system_id: str
    authorised_to_migrate: bool
    plmn_id: str
    """The local PLMN to attach to in the partner's area (MCC-MNC)."""
    attach_url: str
    """The local PLMN gateway's attach endpoint (HTTPS)."""
    sip_core_host: str
    sip_core_port: int
    sip_transport: str
    sip_domain: str
    """The partner registrar domain: the Request-URI of the REGISTER."""
    partner_impu: str
    partner_impi: str
    idms_token_endpoint: str
    idms_audience: str
    """The ``resource`` of the token exchange and ``aud`` of the security token."""
    cms_url: str = ""
    """The partner's CMS (its user profile for the migrated user, 23.280 §10.16.2)."""
    gms_url: str = ""
    """The partner's GMS (its groups), empty when it has none."""


@dataclass(frozen=True)
class UserProfile:
    """An MC service user profile."""

    xui_uri: str
    index: int
    name: str
    mcptt_id: str
    organization: str
    partners: tuple[PartnerSystem, ...] = ()
    migration_for: str | None = None
    """Set in a partner's migration profile: the primary MCPTT ID it is for."""
    groups: tuple[str, ...] = ()
    """The MC service groups the user may use (``<MCPTTGroupInfo>`` entries, 24.484 [S])."""

    def partner(self, system_id: str) -> PartnerSystem | None:
        return next((p for p in self.partners if p.system_id == system_id), None)


def xcap_path(xui: str, index: int | str) -> str:
    """Where a CMS serves a profile (24.484 XCAP layout, as for MCData §10.3 [V])."""
    return f"/{AUID}/users/{xui}/mcptt-user-profile-{index}.xml"


def render(profile: UserProfile) -> bytes:
    # Literal tags under explicit xmlns declarations: ElementTree would
    # otherwise invent ns0:/ns1: prefixes.
    root = ET.Element("mcptt-user-profile", {
        "xmlns": PROFILE_NS, "xmlns:mig": MIGRATION_NS,
        "XUI-URI": profile.xui_uri, "user-profile-index": str(profile.index)})
    ET.SubElement(root, "Name").text = profile.name
    ET.SubElement(root, "Status").text = "true"
    ET.SubElement(root, "ProfileName").text = (
        "migration" if profile.migration_for else "default")
    common = ET.SubElement(root, "Common", {"index": "1"})
    user_id = ET.SubElement(common, "MCPTTUserID")
    ET.SubElement(user_id, "uri-entry").text = profile.mcptt_id
    ET.SubElement(user_id, "display-name").text = profile.name
    ET.SubElement(common, "MissionCriticalOrganization").text = profile.organization
    on_network = ET.SubElement(root, "OnNetwork", {"index": "1"})
    if profile.partners:
        info = ET.SubElement(on_network, "mig:MigrationInfo")
        for partner in profile.partners:
            system = ET.SubElement(info, "mig:PartnerMCSystem", {"id": partner.system_id})
            ET.SubElement(system, "mig:AuthorisedToMigrate").text = (
                "true" if partner.authorised_to_migrate else "false")
            ET.SubElement(system, "mig:LocalPLMN",
                          {"plmn-id": partner.plmn_id, "attach-url": partner.attach_url})
            ET.SubElement(system, "mig:SIPCore", {
                "host": partner.sip_core_host, "port": str(partner.sip_core_port),
                "transport": partner.sip_transport, "domain": partner.sip_domain})
            ET.SubElement(system, "mig:PartnerIdentity",
                          {"impu": partner.partner_impu, "impi": partner.partner_impi})
            ET.SubElement(system, "mig:PartnerIdMS", {
                "token-endpoint": partner.idms_token_endpoint,
                "audience": partner.idms_audience})
            if partner.cms_url or partner.gms_url:
                ET.SubElement(system, "mig:PartnerConfiguration",
                              {"cms": partner.cms_url, "gms": partner.gms_url})
    if profile.groups:
        group_info = ET.SubElement(on_network, "MCPTTGroupInfo")
        for group in profile.groups:
            entry = ET.SubElement(group_info, "entry")
            ET.SubElement(entry, "uri-entry").text = group
    if profile.migration_for:
        ET.SubElement(on_network, "mig:MigrationProfile",
                      {"primary-mcptt-id": profile.migration_for})
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def parse(data: bytes) -> UserProfile:
    """Parse a profile document; raises :class:`XmlError` naming what is wrong."""
    root = parse_xml(data)
    if root.tag != f"{_P}mcptt-user-profile":
        raise XmlError(f"root element is {root.tag}, expected mcptt-user-profile")

    def required(element: ET.Element | None, what: str) -> ET.Element:
        if element is None:
            raise XmlError(f"profile lacks {what}")
        return element

    def attribute(element: ET.Element, name: str) -> str:
        value = element.get(name)
        if value is None:
            raise XmlError(f"<{element.tag.split('}')[-1]}> lacks attribute {name}")
        return value

    try:
        index = int(attribute(root, "user-profile-index"))
    except ValueError:
        raise XmlError("user-profile-index is not a number") from None
    common = required(root.find(f"{_P}Common"), "<Common>")
    user_id = required(common.find(f"{_P}MCPTTUserID/{_P}uri-entry"), "<MCPTTUserID>")
    partners = []
    for system in root.iterfind(f"{_P}OnNetwork/{_M}MigrationInfo/{_M}PartnerMCSystem"):
        plmn = required(system.find(f"{_M}LocalPLMN"), "<mig:LocalPLMN>")
        core = required(system.find(f"{_M}SIPCore"), "<mig:SIPCore>")
        identity = required(system.find(f"{_M}PartnerIdentity"), "<mig:PartnerIdentity>")
        idms = required(system.find(f"{_M}PartnerIdMS"), "<mig:PartnerIdMS>")
        try:
            port = int(attribute(core, "port"))
        except ValueError:
            raise XmlError("SIPCore port is not a number") from None
        configuration = system.find(f"{_M}PartnerConfiguration")
        partners.append(PartnerSystem(
            attribute(system, "id"),
            (system.findtext(f"{_M}AuthorisedToMigrate") or "").strip() == "true",
            attribute(plmn, "plmn-id"), attribute(plmn, "attach-url"),
            attribute(core, "host"), port, attribute(core, "transport"),
            attribute(core, "domain"), attribute(identity, "impu"),
            attribute(identity, "impi"), attribute(idms, "token-endpoint"),
            attribute(idms, "audience"),
            configuration.get("cms", "") if configuration is not None else "",
            configuration.get("gms", "") if configuration is not None else ""))
    groups = tuple((e.text or "").strip() for e in root.iterfind(
        f"{_P}OnNetwork/{_P}MCPTTGroupInfo/{_P}entry/{_P}uri-entry"))
    if len(groups) > MAX_GROUPS:
        raise XmlError(f"{len(groups)} groups exceed {MAX_GROUPS}")
    migration = root.find(f"{_P}OnNetwork/{_M}MigrationProfile")
    return UserProfile(
        xui_uri=attribute(root, "XUI-URI"), index=index,
        name=(root.findtext(f"{_P}Name") or "").strip(),
        mcptt_id=(user_id.text or "").strip(),
        organization=(common.findtext(f"{_P}MissionCriticalOrganization") or "").strip(),
        partners=tuple(partners),
        migration_for=migration.get("primary-mcptt-id") if migration is not None else None,
        groups=groups)
